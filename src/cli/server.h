// `coil server`: the platform. Functions are deployed to it over the control
// API (coil deploy) and served by name, version and host; everything it
// knows lives under --data, so a restart loses nothing.
#pragma once

#include <cstdint>
#include <string>

#include "cli/host.h"

namespace coil::cli {

struct ServerCommandOptions {
  HostOptions host{.listen = "127.0.0.1:8080"};
  std::string key_file;  // else $COIL_API_KEY
  std::string domain;    // Host-based routing: <base32 version id>.<domain>
  uint32_t max_bundle_mb = 64;
  std::string index_url;   // pip's index for requirements.txt
  std::string find_links;  // a directory of wheels for offline builds
};

// Returns the process exit code (as run_up()).
int run_server(const ServerCommandOptions& options);

}  // namespace coil::cli
