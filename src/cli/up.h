// `coil up`: serve the functions of a directory on one machine.
#pragma once

#include <chrono>
#include <string>

namespace coil::cli {

struct UpOptions {
  std::string dir = ".";
  std::string entrypoint;  // "module:attr" to serve DIR without a manifest
  std::string listen = "127.0.0.1:3000";
  uint32_t header_timeout_ms = 30000;
  uint32_t keepalive_timeout_ms = 60000;
  uint32_t shutdown_timeout_ms = 10000;
  bool no_sandbox = false;  // for debugging only: function code runs without isolation
  std::string hosts_file;   // names the outbound proxy resolves from a file first (tests, operators)
  std::string data_dir;     // persistent volumes; "" = $XDG_STATE_HOME/coil or ~/.local/state/coil
};

// Returns the process exit code: 0 after a clean shutdown, 2 for a
// configuration error (nothing was started), 1 for other failures.
int run_up(const UpOptions& options);

}  // namespace coil::cli
