// The manifest (coil.toml): the one place where the configuration schema of a
// function lives, its defaults, and its validation.
//
// Contract: load_manifest() either returns a Manifest in which every function
// is valid and the set is consistent (unique names and routes), or an error
// whose message reads "PATH:LINE: FIELD: what is wrong". Nothing else in coil
// validates configuration again.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "config/allowed_hosts.h"

namespace coil::config {

// How a function is called. kAuto: detected from the entrypoint object when
// the template imports it (an ASGI 3 application, or a Spin handler).
enum class Kind { kAuto, kHandler, kAsgi };

// A [[function.volume]] (aleph's kinds).
struct Volume {
  enum class Kind { kReadonly, kEphemeral, kPersistent };
  Kind kind = Kind::kReadonly;
  std::string mount;      // absolute path inside the sandbox
  std::string source;     // kReadonly: absolute host directory shipped with the function
  std::string name;       // kPersistent: the volume's name, unique per function
  uint32_t size_mib = 0;  // kEphemeral: size of its tmpfs
};

struct FunctionConfig {
  std::string name;
  std::string entrypoint;   // "module:attr"
  std::string source;       // absolute path of the code directory
  std::string route;        // Spin route syntax, as written (one trailing '/' stripped)
  uint32_t timeout_ms = 30000;
  uint32_t min_instances = 0;  // `persistent = true` makes it at least 1
  uint32_t max_instances = 4;
  uint32_t idle_timeout_ms = 60000;
  uint32_t max_queue = 256;
  uint64_t max_body_bytes = 16u << 20;
  Kind kind = Kind::kAuto;
  // aleph's persistent VM: one instance always running (also when idle),
  // restarted if it dies, its template rebuilt if that dies.
  bool persistent = false;
  uint32_t max_concurrency = 100;          // ASGI: requests in flight per instance
  uint32_t max_open_files = 1024;          // RLIMIT_NOFILE of every instance
  uint32_t stream_idle_timeout_ms = 60000;  // once a response started: longest gap between messages
  std::optional<bool> root_path_in_path;   // ASGI: unset = detected from the framework
  // Sandbox limits (src/sandbox/): per instance, except tmp_mb (the /tmp of
  // the function's sandbox, shared by its instances).
  uint32_t memory_mb = 256;
  uint32_t max_processes = 256;  // processes and threads, as the pids controller counts
  double cpu = 1.0;              // CPU share relative to other functions (1.0 = default weight)
  uint32_t tmp_mb = 64;
  std::vector<Volume> volumes;
  // Where the function may connect, through the host's outbound proxy
  // (Spin's syntax, see allowed_hosts.h). Empty: nowhere.
  std::vector<AllowedHost> allowed_outbound_hosts;
  std::vector<std::pair<std::string, std::string>> environment;
  // coil server: the function's built dependency volume (a host directory of
  // packages pip installed from its requirements.txt), mounted read-only at
  // /deps and put on sys.path right after the code. "" = none. Not a
  // manifest field: the server sets it (platform/dependencies.h).
  std::string dependencies;
  // coil server: the function is also served under /fn/NAME/ and /v/ID/,
  // whatever its route. Not a manifest field: the server sets it.
  bool served_under_server_prefixes = false;
  // Where the function is declared, for errors found after parsing
  // (an entrypoint that does not import): "PATH:LINE".
  std::string entrypoint_origin;
};

// Whether an ASGI app of `function` may get a request with a root_path (a
// route prefix): a prefix route other than "/..." (an exact route gives
// none), or coil server's prefixes.
inline bool may_see_route_prefix(const FunctionConfig& function) {
  return function.served_under_server_prefixes || (function.route.ends_with("/...") && function.route != "/...");
}

struct Manifest {
  std::string path;  // the manifest file as given, or "" when built from a command line
  std::vector<FunctionConfig> functions;
};

// Reads and validates DIR/coil.toml (or the file itself when `path` is a file).
Result<Manifest> load_manifest(const std::string& path);

// Parses manifest text; `path` is used in messages and to resolve `source`.
Result<Manifest> parse_manifest(const std::string& text, const std::string& path);

// The manifest-less form `coil up DIR module:attr`: one function named after
// the directory, served at "/...".
Result<Manifest> single_function(const std::string& dir, const std::string& entrypoint);

// "asgi", "handler" or "auto".
const char* kind_name(Kind kind);

// Validation helpers shared with the command line.
Status validate_entrypoint(const std::string& entrypoint);
Status validate_route(const std::string& route);
bool is_valid_name(const std::string& name);

}  // namespace coil::config
