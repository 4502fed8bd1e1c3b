// The sandbox as an ordered checklist of layers. Each layer is one file of
// this folder; this file only says in which order they apply, and who
// applies them.
//
// A function's template is created by the zygote with clone() into new
// user, mount, pid, net, ipc and uts namespaces (namespaces.h), and waits.
// The zygote, still the host's root, then runs prepare_sandbox(): the id maps
// of the user namespace, and the new root assembled inside the sandbox's
// mount namespace (mount.h). Released, the template runs contain() before it
// imports any of the function's code: pivot into that root, hostname,
// drop to the unprivileged function user, rlimits, and last the
// seccomp filter (it also forbids what the earlier steps needed). Instances
// fork from the template and so inherit every layer. cgroups (cgroup.h) are
// per instance, joined by each instance as it starts.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"
#include "sandbox/mount.h"
#include "sandbox/namespaces.h"
#include "sandbox/rlimit.h"

namespace coil::sandbox {

// Where a function reaches its outbound proxy (HTTP_PROXY), inside its sandbox.
inline constexpr uint16_t kOutboundProxyPort = 3128;

struct SandboxPlan {
  bool namespaces = true;      // false: rlimits and seccomp only
  bool user_namespace = true;  // false: a root host without user namespaces
  MountPlan mounts;
  ResourceLimits limits;
};

// The zygote's half, between the clone and the release of the child.
// `own_mount_ns` is an fd of the zygote's own mount namespace, to return to.
// On failure the zygote is back in its namespace and the child must be
// killed. Returns the listening socket of the function's outbound proxy
// (127.0.0.1:kOutboundProxyPort inside the sandbox), for the host.
struct HostNamespaces {
  int mount = -1;
  int net = -1;
};
Result<unique_fd> prepare_sandbox(const ChildRef& child, const SandboxPlan& plan, const HostNamespaces& own);

// The template's half, before the function's code runs. Stops at, and
// reports, the first layer that fails.
Status contain(const SandboxPlan& plan);

}  // namespace coil::sandbox
