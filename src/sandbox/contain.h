// contain(): the sandbox as an ordered checklist of layers, applied in a
// template before it imports the function's code (so that every instance
// forked from it inherits them).
//
// Each layer is one file of this folder. Today: rlimits, then the seccomp
// filter (last, since it restricts what the earlier steps may do). The
// namespace, mount, cgroup and uid layers of the sandbox issue slot in
// before the filter.
#pragma once

#include "common/status.h"
#include "sandbox/rlimit.h"

namespace coil::sandbox {

struct ContainOptions {
  ResourceLimits limits;
};

// Applies every layer; stops at, and reports, the first that fails.
Status contain(const ContainOptions& options);

}  // namespace coil::sandbox
