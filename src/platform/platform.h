// Platform: what `coil server` serves. Deployed functions are reachable by
//   /fn/NAME/...                 the version NAME points to (follows deploys)
//   /v/VERSION/...               one version, immutable (64 hex digits)
//   Host: <base32 id>.<domain>   one version, at the root (with --domain)
//   their manifest routes        as under `coil up` (functions deployed from a coil.toml)
// and the control API under /v1/ (plus /healthz), see control_api.h.
//
// Versions are served lazily: a version's pool (template, instances) is made
// when it is deployed or first requested, so after a restart every function
// is served again, its template rebuilt on its first request. Pools of
// versions no name points to any more are stopped once idle.
//
// Deploy is a checklist (deploy()): unpack the bundle into staging →
// validate its manifest → store the tree under DATA/code/<digest> → build
// the dependency volume of each function with a requirements.txt
// (dependencies.h) → build each new version's template and trial instance →
// record the versions and move the names, in one transaction. A failure at any step stores and
// replaces nothing; the previous versions keep serving.
//
// Single-threaded (the server's event loop), except that deploy() unpacks
// and hashes on a worker thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/manifest.h"
#include "http/dispatcher.h"
#include "platform/dependencies.h"
#include "platform/log_book.h"
#include "router/route_table.h"
#include "runtime/function_pool.h"
#include "runtime/zygote_process.h"
#include "store/bundle.h"
#include "store/registry.h"

namespace coil::platform {

class ControlApi;

struct PlatformOptions {
  std::string data_dir;            // absolute
  std::string domain;              // "" = no Host-based routing
  store::BundleLimits bundle_limits;
  std::string api_key;             // what /v1/ requests must present
  DependencyOptions dependencies;  // how requirements.txt is built
  // Versions no name points to are stopped after this long without requests.
  std::chrono::milliseconds retire_after{60000};
};

// A deploy as the control API received it.
struct DeployRequest {
  std::string bundle;      // the archive
  std::string name;        // with `entrypoint`: the function's name ("" = "app")
  std::string entrypoint;  // "" = deploy what the bundle's coil.toml declares
};

// Where a deploy or an operation failed, as an HTTP status for the API.
struct OperationError {
  uint16_t status = 400;
  std::string message;
};

template <typename T>
using Outcome = std::variant<T, OperationError>;

class Platform : public http::Dispatcher {
 public:
  Platform(boost::asio::io_context& io, PlatformOptions options, runtime::ZygoteProcess& zygote,
           runtime::HostServices services);
  ~Platform() override;

  // Opens the registry under data_dir and loads what it names; removes
  // staging left by an interrupted deploy.
  Status open();

  // http::Dispatcher
  std::optional<http::RoutedRequest> route(std::string_view host, std::string_view decoded_path) override;
  void tick(std::chrono::steady_clock::time_point now) override;
  size_t unanswered() const override;

  // The control API's operations (control_api.h maps them to HTTP).
  using Progress = std::function<void(const std::string& line)>;
  void deploy(DeployRequest request, Progress progress,
              std::function<void(Outcome<std::vector<store::VersionRecord>>)> done);
  Outcome<std::vector<store::VersionRecord>> list();
  Outcome<store::VersionRecord> current(const std::string& name);
  Outcome<std::vector<store::VersionRecord>> versions(const std::string& name);
  // `version` empty: the version deployed before the current one.
  Outcome<store::VersionRecord> rollback(const std::string& name, const std::string& version);
  Outcome<bool> remove(const std::string& name);
  // The pool serving NAME's current version (made if needed); nullptr if no
  // such function.
  std::shared_ptr<runtime::FunctionPool> current_pool(const std::string& name);
  // The URLs of a version; `base` is "http://HOST:PORT" as the client reached us.
  std::vector<std::string> urls(const store::VersionRecord& version, const std::string& base) const;
  // The route a version's coil.toml gives it (served, like /fn/NAME/, for the
  // function's current version); nullopt for a function deployed as an
  // entrypoint, which has none.
  std::optional<std::string> manifest_route(const store::VersionRecord& version) const;

  const PlatformOptions& options() const { return options_; }
  LogBook& logs() { return log_book_; }

  // Closes every pool's instances (see FunctionPool::stop_instances), then
  // calls `done`; stop() stops them all.
  void stop_instances(std::function<void()> done);
  void stop();

 private:
  // One version as served: its record, its configuration, and its pool once made.
  struct Served {
    store::VersionRecord record;
    config::FunctionConfig config;
    std::shared_ptr<runtime::FunctionPool> pool;
    enum class State { kIdle, kStarting, kReady, kFailed } state = State::kIdle;
    std::vector<std::function<void(Status)>> on_started;
    int holds = 0;  // deploys in progress that include this version
    std::chrono::steady_clock::time_point last_used;
  };

  std::string code_dir(const std::string& tree) const { return options_.data_dir + "/code/" + tree; }
  // The function configurations of a stored tree (its coil.toml, or the
  // entrypoint form), with paths under `root`.
  static Result<std::vector<config::FunctionConfig>> read_functions(const std::string& root,
                                                                    const DeployRequest& request);
  Served* served(const std::string& id);
  // The version with this id, loaded from the registry if needed; nullptr if none.
  Served* version_by_id(const std::string& id);
  // The version NAME points to; nullptr if none.
  Served* current_of(const std::string& name);
  Served* load_version(const store::VersionRecord& record);
  // The version's pool, made (and its template started) if needed.
  std::shared_ptr<runtime::FunctionPool> pool_of(Served& version);
  void start_version(Served& version, std::function<void(Status)> done);
  // Stops and forgets a version; deploys waiting for it to start fail with `why`.
  void forget_version(const std::string& id, const std::string& why);
  void rebuild_routes();
  // Why `function` (deployed from a coil.toml) cannot have its route: reserved
  // by the server, or served by another function.
  std::optional<OperationError> route_conflict(const config::FunctionConfig& function) const;
  // Removes the code trees, and the dependency volumes, that nothing uses.
  void collect_trees();
  void finish_deploy(std::vector<config::FunctionConfig> functions, std::string tree, DeployRequest request,
                     Progress progress, std::function<void(Outcome<std::vector<store::VersionRecord>>)> done);

  boost::asio::io_context& io_;
  PlatformOptions options_;
  runtime::ZygoteProcess& zygote_;
  runtime::HostServices services_;
  std::unique_ptr<store::Registry> registry_;
  LogBook log_book_;
  std::unique_ptr<DependencyBuilder> dependencies_;
  std::shared_ptr<ControlApi> control_api_;
  std::map<std::string, std::unique_ptr<Served>> versions_;  // by version id
  std::map<std::string, std::string> current_;               // name -> version id
  // The manifest routes of the current versions; targets index route_names_.
  router::RouteTable routes_;
  std::vector<std::string> route_names_;
  boost::asio::thread_pool workers_{1};
  bool stopping_ = false;
};

}  // namespace coil::platform
