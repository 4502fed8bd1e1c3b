#include "sandbox/instance_mounts.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/unique_fd.h"
#include "sandbox/seccomp.h"

namespace coil::sandbox {
namespace {

Status os_error(const std::string& what) { return Status::error(what + ": " + std::strerror(errno)); }

Status write_file(const std::string& path, const std::string& text) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return os_error("write " + path);
  }
  return Status::ok();
}

// Empties every capability set the new user namespace granted.
Status drop_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return os_error("capset");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return os_error("clear ambient capabilities");
  return Status::ok();
}

}  // namespace

Status mount_instance_volumes(const std::vector<InstanceMount>& mounts) {
  if (mounts.empty()) return Status::ok();
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return os_error("unshare(user, mount)");
  // The only mapping an unprivileged process may write: its own ids.
  if (Status s = write_file("/proc/self/setgroups", "deny"); !s) return s;
  if (Status s = write_file("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1\n"); !s) {
    return s;
  }
  if (Status s = write_file("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1\n"); !s) {
    return s;
  }
  for (const InstanceMount& m : mounts) {
    std::string options = "mode=1777,size=" + std::to_string(m.size_mib) + "m";
    if (::mount("tmpfs", m.mount.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      return os_error("mount tmpfs on " + m.mount);
    }
  }
  if (Status s = drop_capabilities(); !s) return s;
  return install_seccomp_filter(Strictness::kStrict);
}

}  // namespace coil::sandbox
