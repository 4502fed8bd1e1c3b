// The coil binary: the user-facing commands, and the internal `__zygote` mode
// in which the host re-executes itself to start the Python zygote.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cli/up.h"
#include "python/zygote.h"

int main(int argc, char** argv) {
  // Internal: `coil __zygote FD` (see runtime/zygote_process.cc). Checked
  // before any option parsing so that it stays out of the user's interface.
  if (argc == 3 && std::strcmp(argv[1], "__zygote") == 0) {
    return coil::python::run_zygote(std::atoi(argv[2]));
  }
  // Internal: an instance of a multi-threaded template (python/zygote.h).
  if (argc >= 4 && std::strcmp(argv[1], "__instance") == 0) coil::python::run_fresh_instance(argc, argv);

  CLI::App app{"coil: a serverless runtime for Python functions"};
  app.require_subcommand(1);

  coil::cli::UpOptions up;
  CLI::App* up_command = app.add_subcommand("up", "Serve the functions of DIR (its coil.toml) on this machine");
  up_command->add_option("dir", up.dir, "Directory with coil.toml (or the code, with ENTRYPOINT)")->capture_default_str();
  up_command->add_option("entrypoint", up.entrypoint, "module:attr to serve DIR without a manifest, at route /...");
  up_command->add_option("--listen", up.listen, "Address to listen on, HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  up_command->add_option("--header-timeout-ms", up.header_timeout_ms,
                         "Time to receive a request head; also the longest a body may stall")
      ->capture_default_str();
  up_command->add_option("--keepalive-timeout-ms", up.keepalive_timeout_ms, "Idle keep-alive connections close after this")
      ->capture_default_str();
  up_command->add_option("--shutdown-timeout-ms", up.shutdown_timeout_ms,
                         "On SIGINT/SIGTERM, how long requests in flight may take to finish")
      ->capture_default_str();

  up_command->add_option("--data", up.data_dir,
                         "Where coil keeps state (persistent volumes) [default: $XDG_STATE_HOME/coil or "
                         "~/.local/state/coil]");
  up_command->add_option("--hosts-file", up.hosts_file,
                         "Resolve the names functions reach (allowed_outbound_hosts) from this hosts file first");
  up_command->add_flag("--no-sandbox", up.no_sandbox, "Run function code without isolation (debugging only)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (up_command->parsed()) return coil::cli::run_up(up);
  return 2;
}
