// `coil up`: serve the functions of a directory on one machine.
#pragma once

#include <string>

#include "cli/host.h"

namespace coil::cli {

struct UpOptions {
  std::string dir = ".";
  std::string entrypoint;  // "module:attr" to serve DIR without a manifest
  HostOptions host{.listen = "127.0.0.1:3000"};
};

// Returns the process exit code: 0 after a clean shutdown, 2 for a
// configuration error (nothing was started), 1 for other failures.
int run_up(const UpOptions& options);

}  // namespace coil::cli
