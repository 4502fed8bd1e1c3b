#include "cli/host.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/log.h"
#include "services/resolver.h"

namespace coil::cli {
namespace {

constexpr auto kInstanceStopTimeout = std::chrono::seconds(5);

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

}  // namespace

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

// Every client connection is a descriptor, and the usual soft limit (1024)
// is far below what a server holds: it is raised to the hard limit, as
// nginx and uvicorn's users do. Functions keep their own (max_open_files).
void raise_open_files_limit() {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    log::info("could not raise the open files limit to {}: {}", limit.rlim_max, std::strerror(errno));
  }
}

void print_error(const std::string& message) { std::fprintf(stderr, "%s\n", message.c_str()); }

Status to_server_options(const HostOptions& options, http::ServerOptions& out) {
  if (!parse_listen(options.listen, out.host, out.port)) {
    return Status::error("--listen: \"" + options.listen + "\" is not HOST:PORT");
  }
  // Checked here, before anything starts: the address is bound only once
  // every function is ready. "localhost" is the one name taken (as what
  // everyone types); other names are refused rather than resolved.
  if (out.host == "localhost") out.host = "127.0.0.1";
  boost::system::error_code ec;
  boost::asio::ip::make_address(out.host, ec);
  if (ec) {
    return Status::error("--listen: \"" + out.host + "\" is not an IP address (for example 127.0.0.1:3000, " +
                         "0.0.0.0:3000 or [::1]:3000)");
  }
  Result<http::TrustedProxies> proxies = http::TrustedProxies::parse(options.forwarded_allow_ips);
  if (!proxies) return Status::error("--forwarded-allow-ips: " + proxies.message());
  out.trusted_proxies = std::move(*proxies);
  out.header_timeout = std::chrono::milliseconds(options.header_timeout_ms);
  out.keepalive_timeout = std::chrono::milliseconds(options.keepalive_timeout_ms);
  out.shutdown_timeout = std::chrono::milliseconds(options.shutdown_timeout_ms);
  return Status::ok();
}

std::string data_directory(const HostOptions& options) {
  if (!options.data_dir.empty()) return std::filesystem::absolute(options.data_dir).string();
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state == '/') {
    return std::string(state) + "/coil";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && *home != '\0' ? home : "/root") + "/.local/state/coil";
}

Result<std::unique_ptr<HostRuntime>> start_host_runtime(const HostOptions& options) {
  auto runtime = std::make_unique<HostRuntime>();
  boost::asio::io_context& io = runtime->io;
  ::signal(SIGPIPE, SIG_IGN);
  // Processes orphaned under the zygote (a template whose zygote died, a
  // daemon an instance left behind) are re-parented to us, not to init, so
  // that we reap them and can wait for every one of them at exit.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  raise_open_files_limit();

  runtime->sandbox = options.no_sandbox ? runtime::SandboxMode::kOff : runtime::best_sandbox_mode();
  log::info("{}", runtime::describe(runtime->sandbox));
  // cgroups before the zygote: the manager removes what a crashed coil left,
  // and its pool thread starts later, so this process still forks alone.
  if (runtime->sandbox == runtime::SandboxMode::kFull ||
      runtime->sandbox == runtime::SandboxMode::kNamespacesNoUserns) {
    Result<std::unique_ptr<sandbox::CgroupManager>> created = sandbox::CgroupManager::create(sandbox::CgroupLayout{});
    if (created) {
      runtime->cgroups = std::move(*created);
      log::info("sandbox: {}: memory_mb, max_processes and cpu hold per instance", runtime->cgroups->describe());
    } else {
      log::info("WARNING: sandbox: no cgroups ({}); memory_mb falls back to RLIMIT_DATA, max_processes and "
                "cpu are NOT enforced",
                created.message());
    }
  }
  Result<std::unique_ptr<runtime::ZygoteProcess>> zygote =
      runtime::ZygoteProcess::start(io, runtime->sandbox, data_directory(options));
  if (!zygote) return Status::error("coil: cannot start the zygote: " + zygote.message());
  runtime->zygote = std::move(*zygote);

  runtime->services.cgroups = runtime->cgroups.get();
  runtime->services.self = std::make_shared<boost::asio::ip::tcp::endpoint>();
  Result<std::shared_ptr<services::Resolver>> resolver = services::Resolver::create(io, options.hosts_file);
  if (!resolver) {
    runtime->zygote->stop();
    return resolver.status();
  }
  runtime->services.resolver = *resolver;
  return runtime;
}

int serve(http::Server& server, HostRuntime& runtime,
          const std::function<void(std::function<void()>)>& stop_instances, const std::function<void()>& stop_pools) {
  boost::asio::io_context& io = runtime.io;
  if (Status s = server.listen(); !s) {
    print_error("coil: " + s.message());
    stop_pools();
    runtime.zygote->stop();
    return 1;
  }
  {
    // "self" in allowed_outbound_hosts reaches coil's own front.
    boost::system::error_code ec;
    auto address = boost::asio::ip::make_address(server.options().host, ec);
    if (ec || address.is_unspecified()) address = boost::asio::ip::make_address("127.0.0.1");
    *runtime.services.self = boost::asio::ip::tcp::endpoint(address, server.local_port());
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
  const std::string& host = server.options().host;
  log::info("listening on http://{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host,
            server.local_port());
  io.run();

  // Instances exit on their own once their socket closes (ASGI instances run
  // lifespan shutdown first); whatever is left after a bounded wait is killed.
  io.restart();
  bool stopped = false;
  boost::asio::steady_timer give_up(io, kInstanceStopTimeout);
  give_up.async_wait([&](boost::system::error_code ec) {
    if (!ec) log::info("instances and standbys still running after {} s are killed", kInstanceStopTimeout.count());
    io.stop();
  });
  stop_instances([&] {
    stopped = true;
    io.stop();
  });
  if (!stopped) io.run();

  stop_pools();
  io.restart();
  io.poll();  // write out the answers the pools just gave (503 to requests still queued)
  runtime.zygote->stop();
  reap_children(true);
  log::info("stopped");
  log::flush();
  return 0;
}

}  // namespace coil::cli
