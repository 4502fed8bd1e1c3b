#include "sandbox/contain.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/unique_fd.h"
#include "sandbox/namespaces.h"
#include "sandbox/seccomp.h"

namespace coil::sandbox {

Result<unique_fd> prepare_sandbox(const ChildRef& child, const SandboxPlan& plan, const HostNamespaces& own) {
  if (!plan.namespaces) return unique_fd();
  if (plan.user_namespace) {
    if (Status s = write_id_maps(child); !s) return Status::error("user namespace: " + s.message());
  }
  Result<unique_fd> child_mount_ns = open_child_file(child, "ns/mnt", O_RDONLY);
  if (!child_mount_ns) return child_mount_ns.status();
  unique_fd cwd(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (::setns(child_mount_ns->get(), CLONE_NEWNS) != 0) {
    return Status::error(std::string("setns into the sandbox's mount namespace: ") + std::strerror(errno));
  }
  Status assembled = assemble_root(plan.mounts);
  // Back home, whatever happened; a zygote stranded in a sandbox's mount
  // namespace would build every later sandbox from the wrong tree.
  if (::setns(own.mount, CLONE_NEWNS) != 0 || (cwd && ::fchdir(cwd.get()) != 0)) {
    std::fprintf(stderr, "coil: zygote: cannot return to its mount namespace: %s\n", std::strerror(errno));
    std::abort();
  }
  if (!assembled) return Status::error("mount: " + assembled.message());
  Result<unique_fd> listener = listen_inside(child, own.net, kOutboundProxyPort);
  if (!listener) return Status::error("net namespace: " + listener.message());
  return listener;
}

Status contain(const SandboxPlan& plan) {
  if (plan.namespaces) {
    if (plan.user_namespace) {
      if (Status s = become_namespace_root(); !s) return Status::error("user namespace: " + s.message());
    }
    if (Status s = enter_root(); !s) return Status::error("mount: " + s.message());
    // Rooted at the function's cgroup, where the zygote has put this process.
    if (::unshare(CLONE_NEWCGROUP) != 0) {
      return Status::error(std::string("cgroup namespace: ") + std::strerror(errno));
    }
    if (Status s = set_hostname(plan.mounts.hostname); !s) return Status::error("uts namespace: " + s.message());
    if (Status s = become_function_user(plan.user_namespace); !s) return Status::error("user: " + s.message());
  }
  if (Status s = apply_rlimits(plan.limits); !s) return s;
  bool ephemeral = false;
  for (const VolumeMount& volume : plan.mounts.volumes) ephemeral |= volume.kind == VolumeMount::Kind::kEphemeral;
  // Instances of a function with ephemeral volumes make their own mount
  // namespace before they stack the strict filter (instance_mounts.h).
  if (Status s = install_seccomp_filter(ephemeral && plan.namespaces ? Strictness::kAllowPrivateMounts
                                                                     : Strictness::kStrict);
      !s) {
    return s;
  }
  return Status::ok();
}

}  // namespace coil::sandbox
