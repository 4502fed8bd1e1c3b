#include "cli/up.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <filesystem>
#include <memory>
#include <vector>

#include "common/log.h"
#include "config/manifest.h"
#include "http/dispatcher.h"
#include "http/server.h"
#include "router/route_table.h"
#include "runtime/function_pool.h"

namespace coil::cli {

int run_up(const UpOptions& options) {
  // 1. Configuration, validated whole before anything starts.
  Result<config::Manifest> manifest = options.entrypoint.empty()
                                          ? config::load_manifest(options.dir)
                                          : config::single_function(options.dir, options.entrypoint);
  if (!manifest) {
    print_error(manifest.message());
    return kConfigError;
  }
  if (std::error_code ec; !options.entrypoint.empty() &&
                          std::filesystem::exists(std::filesystem::path(options.dir) / "coil.toml", ec)) {
    log::info("{}/coil.toml is not read: {} is served alone, at /..., without its settings", options.dir,
              options.entrypoint);
  }
  http::ServerOptions server_options;
  if (Status s = to_server_options(options.host, server_options); !s) {
    print_error(s.message());
    return kConfigError;
  }
  router::RouteTable routes;
  for (size_t i = 0; i < manifest->functions.size(); ++i) {
    if (Status s = routes.add(manifest->functions[i].route, i); !s) {
      print_error(s.message());
      return kConfigError;
    }
  }

  // 2. The zygote and host services, while this process is still single-threaded.
  Result<std::unique_ptr<HostRuntime>> runtime = start_host_runtime(options.host);
  if (!runtime) {
    print_error(runtime.message());
    return 1;
  }
  HostRuntime& host = **runtime;
  boost::asio::io_context& io = host.io;
  // 3. Every template built (every entrypoint imported) before listening.
  std::vector<std::shared_ptr<runtime::FunctionPool>> pools;
  size_t pending = manifest->functions.size();
  std::vector<std::string> errors;
  for (const config::FunctionConfig& function : manifest->functions) {
    pools.push_back(std::make_shared<runtime::FunctionPool>(io, function, *host.zygote, host.services));
  }
  for (auto& pool : pools) {
    pool->start([&](Status s) {
      if (!s) errors.push_back(s.message());
      if (--pending == 0) io.stop();
    });
  }
  // SIGINT/SIGTERM while imports or lifespan startups run stop coil as
  // cleanly as later: the templates and instances started so far end with
  // their pools (and their cgroups with them).
  bool interrupted = false;
  {
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int signal) {
      if (ec) return;
      log::info("{} received while starting: stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
      interrupted = true;
      io.stop();
    });
    io.run();
    io.restart();
  }
  if (interrupted || !errors.empty()) {
    log::flush();
    if (!interrupted) {
      for (const std::string& error : errors) print_error(error);
    }
    for (auto& pool : pools) pool->stop();
    pools.clear();
    io.poll();
    host.zygote->stop();
    reap_children(true);
    if (interrupted) log::info("stopped");
    log::flush();
    return interrupted ? 0 : kConfigError;
  }

  // 4. Serve until SIGINT/SIGTERM, then drain.
  http::RouteTableDispatcher dispatcher(routes, pools);
  http::Server server(io, server_options, dispatcher);
  auto stop_instances = [&](std::function<void()> done) {
    auto left = std::make_shared<size_t>(pools.size() + 1);
    auto one_done = [left, done = std::move(done)] {
      if (--*left == 0) done();
    };
    for (auto& pool : pools) pool->stop_instances(one_done);
    one_done();
  };
  auto stop_pools = [&] {
    for (auto& pool : pools) pool->stop();
  };
  return serve(server, host, stop_instances, stop_pools);
}

}  // namespace coil::cli
