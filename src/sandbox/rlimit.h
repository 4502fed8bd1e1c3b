// The rlimit layer of the sandbox: per-process limits set in a template
// before the function's code runs, and inherited by its instances.
//
// Today: open files (max_open_files) and no core dumps. Function code cannot
// raise them again: the seccomp filter refuses setrlimit, and prlimit64 with
// a new limit (see seccomp.h).
#pragma once

#include <cstdint>

#include "common/status.h"

namespace coil::sandbox {

struct ResourceLimits {
  uint64_t max_open_files = 1024;
};

Status apply_rlimits(const ResourceLimits& limits);

}  // namespace coil::sandbox
