#include "cli/up.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cerrno>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <vector>

#include "common/log.h"
#include "config/manifest.h"
#include "http/server.h"
#include "sandbox/cgroup.h"
#include "services/resolver.h"
#include "router/route_table.h"
#include "runtime/function_pool.h"
#include "runtime/zygote_process.h"

namespace coil::cli {
namespace {

constexpr int kConfigError = 2;
constexpr auto kInstanceStopTimeout = std::chrono::seconds(5);

void print_error(const std::string& message) { std::fprintf(stderr, "%s\n", message.c_str()); }

// "HOST:PORT" or "[V6]:PORT".
bool parse_listen(const std::string& text, std::string& host, uint16_t& port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return false;
  host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return false;
  char* end = nullptr;
  unsigned long value = std::strtoul(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || value > 65535) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

// Reaps exited children (the zygote, and orphans re-parented to us). With
// `wait_all`, waits a bounded time for every remaining child to exit.
void reap_children(bool wait_all) {
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (true) {
    pid_t pid = ::waitpid(-1, nullptr, WNOHANG);
    if (pid > 0 || (pid < 0 && errno == EINTR)) continue;
    if (pid == 0 && wait_all && std::chrono::steady_clock::now() < give_up) {
      ::usleep(1000);  // children are exiting (SIGKILLed): poll briefly
      continue;
    }
    return;  // none left (ECHILD), or none exited yet
  }
}

}  // namespace

std::string data_directory(const UpOptions& options) {
  if (!options.data_dir.empty()) return std::filesystem::absolute(options.data_dir).string();
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state == '/') {
    return std::string(state) + "/coil";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && *home != '\0' ? home : "/root") + "/.local/state/coil";
}

int run_up(const UpOptions& options) {
  // 1. Configuration, validated whole before anything starts.
  Result<config::Manifest> manifest = options.entrypoint.empty()
                                          ? config::load_manifest(options.dir)
                                          : config::single_function(options.dir, options.entrypoint);
  if (!manifest) {
    print_error(manifest.message());
    return kConfigError;
  }
  http::ServerOptions server_options;
  if (!parse_listen(options.listen, server_options.host, server_options.port)) {
    print_error("--listen: \"" + options.listen + "\" is not HOST:PORT");
    return kConfigError;
  }
  server_options.header_timeout = std::chrono::milliseconds(options.header_timeout_ms);
  server_options.keepalive_timeout = std::chrono::milliseconds(options.keepalive_timeout_ms);
  server_options.shutdown_timeout = std::chrono::milliseconds(options.shutdown_timeout_ms);

  router::RouteTable routes;
  for (size_t i = 0; i < manifest->functions.size(); ++i) {
    if (Status s = routes.add(manifest->functions[i].route, i); !s) {
      print_error(s.message());
      return kConfigError;
    }
  }

  ::signal(SIGPIPE, SIG_IGN);
  // Processes orphaned under the zygote (a template whose zygote died, a
  // daemon an instance left behind) are re-parented to us, not to init, so
  // that we reap them and can wait for every one of them at exit.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  boost::asio::io_context io(1);

  // 2. The zygote, while this process is still single-threaded.
  runtime::SandboxMode sandbox = options.no_sandbox ? runtime::SandboxMode::kOff : runtime::best_sandbox_mode();
  log::info("{}", runtime::describe(sandbox));
  // cgroups before the zygote: the manager removes what a crashed coil left,
  // and its pool thread starts later, so this process still forks alone.
  std::unique_ptr<sandbox::CgroupManager> cgroups;
  if (sandbox == runtime::SandboxMode::kFull || sandbox == runtime::SandboxMode::kNamespacesNoUserns) {
    Result<std::unique_ptr<sandbox::CgroupManager>> created = sandbox::CgroupManager::create(sandbox::CgroupLayout{});
    if (created) {
      cgroups = std::move(*created);
      log::info("sandbox: {}: memory_mb, max_processes and cpu hold per instance", cgroups->describe());
    } else {
      log::info("WARNING: sandbox: no cgroups ({}); memory_mb falls back to RLIMIT_DATA, max_processes and "
                "cpu are NOT enforced",
                created.message());
    }
  }
  Result<std::unique_ptr<runtime::ZygoteProcess>> zygote =
      runtime::ZygoteProcess::start(io, sandbox, data_directory(options));
  if (!zygote) {
    print_error("coil: cannot start the zygote: " + zygote.message());
    return 1;
  }

  runtime::HostServices host_services;
  host_services.cgroups = cgroups.get();
  host_services.self = std::make_shared<boost::asio::ip::tcp::endpoint>();
  Result<std::shared_ptr<services::Resolver>> resolver = services::Resolver::create(io, options.hosts_file);
  if (!resolver) {
    print_error(resolver.message());
    return kConfigError;
  }
  host_services.resolver = *resolver;

  // 3. Every template built (every entrypoint imported) before listening.
  std::vector<std::unique_ptr<runtime::FunctionPool>> pools;
  size_t pending = manifest->functions.size();
  std::vector<std::string> errors;
  for (const config::FunctionConfig& function : manifest->functions) {
    pools.push_back(std::make_unique<runtime::FunctionPool>(io, function, **zygote, host_services));
  }
  for (auto& pool : pools) {
    pool->start([&](Status s) {
      if (!s) errors.push_back(s.message());
      if (--pending == 0) io.stop();
    });
  }
  io.run();
  io.restart();
  if (!errors.empty()) {
    log::flush();
    for (const std::string& error : errors) print_error(error);
    pools.clear();
    (*zygote)->stop();
    return kConfigError;
  }

  // 4. Serve until SIGINT/SIGTERM, then drain.
  http::Server server(io, server_options, routes, pools);
  if (Status s = server.listen(); !s) {
    print_error("coil: " + s.message());
    pools.clear();
    (*zygote)->stop();
    return 1;
  }
  {
    // "self" in allowed_outbound_hosts reaches coil's own front.
    boost::system::error_code ec;
    auto address = boost::asio::ip::make_address(server_options.host, ec);
    if (ec || address.is_unspecified()) address = boost::asio::ip::make_address("127.0.0.1");
    *host_services.self = boost::asio::ip::tcp::endpoint(address, server.local_port());
  }
  boost::asio::signal_set children(io, SIGCHLD);
  std::function<void()> reap = [&] {
    children.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      reap_children(false);
      reap();
    });
  };
  reap();
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signal) {
    if (ec) return;
    log::info("{} received: finishing requests in flight, then stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
    server.shutdown([&] { io.stop(); });
  });
  server.start();
  std::string host = server_options.host.find(':') != std::string::npos ? "[" + server_options.host + "]"
                                                                         : server_options.host;
  log::info("listening on http://{}:{}", host, server.local_port());
  io.run();

  // Instances exit on their own once their socket closes (ASGI instances run
  // lifespan shutdown first); whatever is left after a bounded wait is killed.
  io.restart();
  size_t stopping = pools.size();
  boost::asio::steady_timer give_up(io, kInstanceStopTimeout);
  give_up.async_wait([&](boost::system::error_code ec) {
    if (!ec) log::info("instances still running after {} s are killed", kInstanceStopTimeout.count());
    io.stop();
  });
  for (auto& pool : pools) {
    pool->stop_instances([&] {
      if (--stopping == 0) io.stop();
    });
  }
  if (stopping > 0) io.run();

  for (auto& pool : pools) pool->stop();
  io.restart();
  io.poll();  // write out the answers the pools just gave (503 to requests still queued)
  (*zygote)->stop();
  reap_children(true);
  log::info("stopped");
  log::flush();
  return 0;
}

}  // namespace coil::cli
