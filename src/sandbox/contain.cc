#include "sandbox/contain.h"

#include "sandbox/seccomp.h"

namespace coil::sandbox {

Status contain(const ContainOptions& options) {
  if (Status s = apply_rlimits(options.limits); !s) return s;
  if (Status s = install_seccomp_filter(); !s) return s;
  return Status::ok();
}

}  // namespace coil::sandbox
