// Per-instance mounts: an instance's ephemeral volumes (tmpfs of size_mib,
// private to the instance, gone when it exits).
//
// Instances are forks of an unprivileged template, so they cannot be handed
// a mount namespace by anyone: each makes its own. It creates a user
// namespace of its own (the unprivileged kind: its uid 1000 maps to itself)
// together with a mount namespace, mounts its tmpfs volumes there, drops the
// capabilities that the new user namespace gave it, and stacks the strict
// seccomp filter on the template's (which allowed exactly this; see
// seccomp.h). All before it runs any of the function's code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace coil::sandbox {

struct InstanceMount {
  std::string mount;  // absolute path inside the sandbox (an existing directory)
  uint64_t size_mib = 0;
};

// In the instance (single-threaded, uid kFunctionUid): the steps above.
Status mount_instance_volumes(const std::vector<InstanceMount>& mounts);

}  // namespace coil::sandbox
