// The commands that drive a `coil server` over its control API
// (docs/control-api.md): deploy, ls, rm, rollback, logs, invoke.
//
// Every one takes --server URL (default: $COIL_SERVER, else
// http://127.0.0.1:8080) and reads the API key from --key-file FILE or
// $COIL_API_KEY. Exit codes: 0 success, 1 the server refused or could not be
// reached, 2 a usage error (bad arguments, no key, unreadable local input).
#pragma once

#include <memory>
#include <optional>

namespace CLI {
class App;
}

namespace coil::cli {

class RemoteCommands {
 public:
  // Adds the subcommands to `app`; `app` must outlive this object.
  explicit RemoteCommands(CLI::App& app);
  ~RemoteCommands();
  RemoteCommands(const RemoteCommands&) = delete;
  RemoteCommands& operator=(const RemoteCommands&) = delete;

  // After app.parse(): runs the subcommand that was parsed and returns its
  // exit code, or std::nullopt when none of these was.
  std::optional<int> run();

 private:
  struct Commands;
  std::unique_ptr<Commands> commands_;
};

}  // namespace coil::cli
