// What `coil up` and `coil server` share: the options of the host process,
// starting its runtime (sandbox mode, cgroups, the zygote, host services),
// and serving until SIGINT/SIGTERM, then draining.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "http/server.h"
#include "runtime/function_pool.h"
#include "runtime/zygote_process.h"
#include "sandbox/cgroup.h"

namespace coil::cli {

// Options every serving command has.
struct HostOptions {
  std::string listen;
  uint32_t header_timeout_ms = 30000;
  uint32_t keepalive_timeout_ms = 60000;
  uint32_t shutdown_timeout_ms = 10000;
  bool no_sandbox = false;  // for debugging only: function code runs without isolation
  std::string hosts_file;   // names the outbound proxy resolves from a file first (tests, operators)
  std::string data_dir;     // "" = $XDG_STATE_HOME/coil or ~/.local/state/coil
  std::string forwarded_allow_ips;  // peers whose X-Forwarded-Proto/-For are believed (http/forwarded.h)
};

constexpr int kConfigError = 2;

void print_error(const std::string& message);
// "HOST:PORT" or "[V6]:PORT" into the server's options, with the timeouts.
Status to_server_options(const HostOptions& options, http::ServerOptions& out);
std::string data_directory(const HostOptions& options);

// The host's runtime. Contract: started while the process is still
// single-threaded (the zygote is forked from it).
//
// The members are declared in the order their lifetimes need: `cgroups`
// before `io` so that it outlives the event loop. Whatever io's handlers
// still own when it is destroyed (a FunctionPool kept alive by a pending
// operation) is destroyed in ~io_context, and a pool's destructor returns
// its groups to the manager. Everything bound to `io` (the zygote's socket,
// the resolver, every server and pool made by the caller) is declared after
// it, so it is destroyed first.
struct HostRuntime {
  runtime::SandboxMode sandbox = runtime::SandboxMode::kOff;
  std::unique_ptr<sandbox::CgroupManager> cgroups;
  boost::asio::io_context io{1};  // one thread: the host's event loop
  std::unique_ptr<runtime::ZygoteProcess> zygote;
  runtime::HostServices services;
};
Result<std::unique_ptr<HostRuntime>> start_host_runtime(const HostOptions& options);

// Reaps exited children (the zygote, and orphans re-parented to us). With
// `wait_all`, waits a bounded time for every remaining child to exit.
void reap_children(bool wait_all);

// Listens, serves until SIGINT/SIGTERM, drains the server, lets instances
// exit (`stop_instances`, bounded), stops every pool (`stop_pools`) and the
// zygote. Returns the exit code.
int serve(http::Server& server, HostRuntime& runtime,
          const std::function<void(std::function<void()>)>& stop_instances, const std::function<void()>& stop_pools);

}  // namespace coil::cli
