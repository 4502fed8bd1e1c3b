// The rlimit layer of the sandbox: per-process limits set in a template
// before the function's code runs, and inherited by its instances.
//
// Open files (max_open_files), no core dumps, and where the host has no
// cgroups, the memory limit as RLIMIT_DATA. Function code cannot
// raise them again: the seccomp filter refuses setrlimit, and prlimit64 with
// a new limit (see seccomp.h).
#pragma once

#include <cstdint>

#include "common/status.h"

namespace coil::sandbox {

struct ResourceLimits {
  uint64_t max_open_files = 1024;
  // RLIMIT_DATA (heap and private mappings), per process: the memory limit
  // of last resort, where no cgroup can be had (0 = none). Exceeding it is a
  // MemoryError in Python rather than a kill.
  uint64_t data_bytes = 0;
};

Status apply_rlimits(const ResourceLimits& limits);

}  // namespace coil::sandbox
