// The coil binary: the user-facing commands. Python runs in separate
// processes: Debian's python3.11, running coil-python.so
// (src/python/main.cc), which the host starts.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cli/remote.h"
#include "cli/server.h"
#include "cli/up.h"

namespace {

// The options of every command that serves (coil up, coil server).
void add_host_options(CLI::App& command, coil::cli::HostOptions& host, const std::string& state) {
  command.add_option("--listen", host.listen, "Address to listen on, HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  command.add_option("--header-timeout-ms", host.header_timeout_ms,
                     "Time to receive a request head; also the longest a body may stall")
      ->capture_default_str();
  command.add_option("--keepalive-timeout-ms", host.keepalive_timeout_ms,
                     "Idle keep-alive connections close after this")
      ->capture_default_str();
  command.add_option("--shutdown-timeout-ms", host.shutdown_timeout_ms,
                     "On SIGINT/SIGTERM, how long requests in flight may take to finish")
      ->capture_default_str();
  command.add_option("--data", host.data_dir,
                     "Where coil keeps state (" + state + ") [default: $XDG_STATE_HOME/coil or ~/.local/state/coil]");
  command.add_option("--hosts-file", host.hosts_file,
                     "Resolve the names functions reach (allowed_outbound_hosts) from this hosts file first");
  command.add_option("--forwarded-allow-ips", host.forwarded_allow_ips,
                     "Reverse proxies (IP addresses, comma-separated, or *) whose X-Forwarded-Proto and "
                     "X-Forwarded-For are believed [default: none]");
  command.add_flag("--no-sandbox", host.no_sandbox, "Run function code without isolation (debugging only)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coil: a serverless runtime for Python functions"};
  app.require_subcommand(1);

  coil::cli::UpOptions up;
  CLI::App* up_command = app.add_subcommand("up", "Serve the functions of DIR (its coil.toml) on this machine");
  up_command->add_option("dir", up.dir, "Directory with coil.toml (or the code, with ENTRYPOINT)")->capture_default_str();
  up_command->add_option("entrypoint", up.entrypoint, "module:attr to serve DIR without a manifest, at route /...");
  add_host_options(*up_command, up.host, "persistent volumes");

  coil::cli::ServerCommandOptions server;
  CLI::App* server_command =
      app.add_subcommand("server", "Run the platform: functions deployed with `coil deploy`, a control API under /v1/");
  add_host_options(*server_command, server.host, "deployed code, versions, logs, persistent volumes");
  server_command->add_option("--key-file", server.key_file,
                             "File holding the control API key [default: the environment variable COIL_API_KEY]");
  server_command->add_option("--domain", server.domain,
                             "Serve each version at http://<base32 id>.DOMAIN/ (Host-based routing)");
  server_command->add_option("--max-bundle-mb", server.max_bundle_mb, "Largest bundle a deploy may upload")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  server_command->add_option("--index-url", server.index_url,
                             "Package index for requirements.txt builds (the only host a build may reach)");
  server_command->add_option("--find-links", server.find_links,
                             "Directory of wheels for requirements.txt builds (offline, with no --index-url)");

  coil::cli::RemoteCommands remote(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (up_command->parsed()) return coil::cli::run_up(up);
  if (server_command->parsed()) return coil::cli::run_server(server);
  if (auto code = remote.run()) return *code;
  return 2;
}
