#include "sandbox/rlimit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace coil::sandbox {
namespace {

Status set_limit(int resource, const char* name, rlim_t value) {
  rlimit limit{value, value};
  if (::setrlimit(resource, &limit) != 0) {
    return Status::error(std::string("setrlimit(") + name + "): " + std::strerror(errno));
  }
  return Status::ok();
}

}  // namespace

Status apply_rlimits(const ResourceLimits& limits) {
  if (Status s = set_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", limits.max_open_files); !s) return s;
  if (limits.data_bytes > 0) {
    if (Status s = set_limit(RLIMIT_DATA, "RLIMIT_DATA", limits.data_bytes); !s) return s;
  }
  return set_limit(RLIMIT_CORE, "RLIMIT_CORE", 0);
}

}  // namespace coil::sandbox
