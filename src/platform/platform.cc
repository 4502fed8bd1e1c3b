#include "platform/platform.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <filesystem>
#include <algorithm>
#include <random>
#include <set>

#include "common/log.h"
#include "platform/control_api.h"
#include "store/tree_digest.h"

namespace coil::platform {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kFunctionPrefix = "/fn/";
constexpr std::string_view kVersionPrefix = "/v/";

std::string random_hex(size_t bytes) {
  std::random_device device;
  std::string text;
  static const char* digits = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    unsigned value = device() & 0xff;
    text += digits[value >> 4];
    text += digits[value & 0xf];
  }
  return text;
}

// Whether `path` (absolute, normalised) is `root` or lies under it.
bool inside(const fs::path& root, const fs::path& path) {
  auto r = root.lexically_normal(), p = path.lexically_normal();
  auto [end, _] = std::mismatch(r.begin(), r.end(), p.begin(), p.end());
  return end == r.end();
}

// Messages name files relative to the bundle ("coil.toml:3: ..."), not the
// server's staging directory.
std::string relative_to_bundle(std::string message, const std::string& root) {
  std::string prefix = root + "/";
  for (size_t at; (at = message.find(prefix)) != std::string::npos;) message.erase(at, prefix.size());
  for (size_t at; (at = message.find(root)) != std::string::npos;) message.replace(at, root.size(), 1, '.');
  return message;
}

// "/fn/NAME/rest" -> NAME and the route "/fn/NAME/...".
bool split_prefixed(std::string_view path, std::string_view prefix, std::string_view& segment,
                    std::string_view& rest) {
  if (path.substr(0, prefix.size()) != prefix) return false;
  std::string_view tail = path.substr(prefix.size());
  size_t slash = tail.find('/');
  segment = tail.substr(0, slash);
  rest = slash == std::string_view::npos ? std::string_view() : tail.substr(slash);
  return !segment.empty();
}

const char* reserved_route_prefix(const std::string& route) {
  // The server's own paths: everything under these prefixes ...
  for (const char* reserved : {"/fn/", "/v/", "/v1/"}) {
    std::string bare(reserved);
    bare.pop_back();
    if (route == bare || route.rfind(reserved, 0) == 0 || route == bare + "/...") return reserved;
  }
  // ... and this one path (a route such as /healthz-ui/... is a function's).
  if (route == "/healthz" || route == "/healthz/...") return "/healthz";
  return nullptr;
}

}  // namespace

Platform::Platform(boost::asio::io_context& io, PlatformOptions options, runtime::ZygoteProcess& zygote,
                   runtime::HostServices services)
    : io_(io),
      options_(std::move(options)),
      zygote_(zygote),
      services_(std::move(services)),
      log_book_(options_.data_dir + "/logs") {
  services_.output_tap = [this](const std::string& function, pid_t pid, std::string_view line) {
    log_book_.append(function, pid, line);
  };
  control_api_ = std::make_shared<ControlApi>(*this);
  runtime::HostServices builder_services = services_;
  dependencies_ = std::make_unique<DependencyBuilder>(io_, options_.data_dir, options_.dependencies, zygote_,
                                                      builder_services);
}

Platform::~Platform() {
  stop();
  workers_.join();
  dependencies_.reset();
}

Status Platform::open() {
  if (Status s = dependencies_->check(); !s) return s;
  std::error_code ec;
  for (const char* sub : {"code", "staging", "logs"}) {
    fs::create_directories(options_.data_dir + "/" + sub, ec);
    if (ec) return Status::error("--data: cannot create " + options_.data_dir + "/" + sub + ": " + ec.message());
  }
  // Deploys interrupted by a crash leave staging behind; nothing refers to it.
  for (const auto& entry : fs::directory_iterator(options_.data_dir + "/staging", ec)) fs::remove_all(entry.path(), ec);
  Result<std::unique_ptr<store::Registry>> registry = store::Registry::open(options_.data_dir + "/registry.sqlite3");
  if (!registry) return registry.status();
  registry_ = std::move(*registry);
  Result<std::vector<store::VersionRecord>> current = registry_->current_versions();
  if (!current) return current.status();
  for (const store::VersionRecord& record : *current) {
    if (load_version(record) == nullptr) continue;  // said in the log; the others still serve
    current_[record.name] = record.id;
  }
  rebuild_routes();
  log::info("server: {} functions in {}", current_.size(), options_.data_dir);
  return Status::ok();
}

Result<std::vector<config::FunctionConfig>> Platform::read_functions(const std::string& root,
                                                                     const DeployRequest& request) {
  Result<config::Manifest> manifest = Status::error("");
  if (!request.entrypoint.empty()) {
    manifest = config::single_function(root, request.entrypoint);
    if (manifest) {
      std::string name = request.name.empty() ? "app" : request.name;
      if (!config::is_valid_name(name)) {
        return Status::error("name \"" + name + "\": must match [a-z0-9-]+ (at most 63 characters)");
      }
      manifest->functions[0].name = name;
    }
  } else {
    if (!fs::exists(root + "/coil.toml")) {
      return Status::error(
          "the bundle has no coil.toml: give an entrypoint to deploy it as one function "
          "(coil deploy DIR module:attr --name NAME)");
    }
    manifest = config::load_manifest(root);
  }
  if (!manifest) return Status::error(relative_to_bundle(manifest.message(), root));
  for (config::FunctionConfig& function : manifest->functions) function.served_under_server_prefixes = true;
  // Everything a function reads must come from the bundle.
  for (const config::FunctionConfig& function : manifest->functions) {
    if (!inside(root, function.source)) {
      return Status::error("function " + function.name + ": source must be inside the bundle");
    }
    for (const config::Volume& volume : function.volumes) {
      if (volume.kind == config::Volume::Kind::kReadonly && !inside(root, volume.source)) {
        return Status::error("function " + function.name + ": volume " + volume.mount +
                             ": source must be inside the bundle");
      }
    }
  }
  return std::move(manifest->functions);
}

Platform::Served* Platform::served(const std::string& id) {
  auto it = versions_.find(id);
  return it == versions_.end() ? nullptr : it->second.get();
}

Platform::Served* Platform::version_by_id(const std::string& id) {
  if (Served* entry = served(id)) return entry;
  Result<std::optional<store::VersionRecord>> record = registry_->version(id);
  return record && *record ? load_version(**record) : nullptr;
}

Platform::Served* Platform::current_of(const std::string& name) {
  auto it = current_.find(name);
  return it == current_.end() ? nullptr : served(it->second);
}

Platform::Served* Platform::load_version(const store::VersionRecord& record) {
  if (Served* known = served(record.id)) return known;
  DeployRequest how;
  how.name = record.name;
  how.entrypoint = record.entrypoint;
  Result<std::vector<config::FunctionConfig>> functions = read_functions(code_dir(record.tree), how);
  if (!functions) {
    log::info("server: version {} of {} cannot be served: {}", record.id, record.name, functions.message());
    return nullptr;
  }
  for (config::FunctionConfig& function : *functions) {
    if (function.name != record.name) continue;
    auto entry = std::make_unique<Served>();
    entry->record = record;
    entry->config = std::move(function);
    if (record.kind == "asgi") entry->config.kind = config::Kind::kAsgi;
    if (record.kind == "handler") entry->config.kind = config::Kind::kHandler;
    if (fs::exists(entry->config.source + "/requirements.txt")) {
      Result<std::string> volume = dependencies_->volume_of(entry->config.source);
      if (volume) entry->config.dependencies = *volume;
      if (!volume || !fs::is_directory(*volume)) {
        log::info("server: version {} of {}: its dependency volume is missing: it will not start", record.id,
                  record.name);
      }
    }
    entry->last_used = std::chrono::steady_clock::now();
    Served* raw = entry.get();
    versions_[record.id] = std::move(entry);
    return raw;
  }
  log::info("server: version {} of {}: the function is not in its coil.toml", record.id, record.name);
  return nullptr;
}

std::shared_ptr<runtime::FunctionPool> Platform::pool_of(Served& version) {
  version.last_used = std::chrono::steady_clock::now();
  if (version.state == Served::State::kIdle || version.state == Served::State::kFailed) {
    // Requests wait in the pool's queue while its template builds.
    start_version(version, nullptr);
  }
  return version.pool;
}

void Platform::start_version(Served& version, std::function<void(Status)> done) {
  if (done) {
    if (version.state == Served::State::kReady) {
      done(Status::ok());
      return;
    }
    version.on_started.push_back(std::move(done));
  }
  if (version.state == Served::State::kStarting) return;
  if (version.pool) {
    version.pool->stop();
    boost::asio::post(io_, [pool = version.pool] {});  // released after this event
  }
  version.state = Served::State::kStarting;
  version.pool = std::make_shared<runtime::FunctionPool>(io_, version.config, zygote_, services_);
  std::string id = version.record.id;
  // A trial instance for every kind: a deploy is accepted once an instance
  // of it has started, not only its template.
  version.pool->start(
      [this, id](Status s) {
        Served* entry = served(id);
        if (entry == nullptr) return;
        entry->state = s ? Served::State::kReady : Served::State::kFailed;
        if (s) entry->record.kind = entry->pool->kind() == config::Kind::kAsgi ? "asgi" : "handler";
        if (!s) log::info("server: {} version {} failed to start: {}", entry->record.name, id, s.message());
        for (auto& waiter : std::exchange(entry->on_started, {})) waiter(s);
      },
      runtime::FunctionPool::Trial::kAlways);
}

void Platform::forget_version(const std::string& id, const std::string& why) {
  auto it = versions_.find(id);
  if (it == versions_.end()) return;
  std::unique_ptr<Served> entry = std::move(it->second);
  versions_.erase(it);
  if (entry->pool) {
    entry->pool->stop();
    // This may run inside one of the pool's own callbacks: it is released
    // after this event, not under its feet.
    boost::asio::post(io_, [pool = entry->pool] {});
  }
  for (auto& waiter : std::exchange(entry->on_started, {})) waiter(Status::error(why));
}

std::optional<http::RoutedRequest> Platform::route(std::string_view host, std::string_view path) {
  if (path == "/healthz" || path == "/v1" || path.substr(0, 4) == "/v1/") {
    return http::RoutedRequest{control_api_, "/...", "", std::string(path)};
  }
  if (!options_.domain.empty() && !host.empty()) {
    std::string_view name = host.substr(0, host.rfind(':') == std::string_view::npos || host.back() == ']'
                                               ? host.size()
                                               : host.rfind(':'));
    std::string suffix = "." + options_.domain;
    if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
      std::string_view label = name.substr(0, name.size() - suffix.size());
      Result<store::Digest> digest = store::parse_base32(label);
      Served* entry = digest ? version_by_id(store::to_hex(*digest)) : nullptr;
      if (entry == nullptr) return std::nullopt;
      return http::RoutedRequest{pool_of(*entry), "/...", "", std::string(path)};
    }
  }
  std::string_view segment, rest;
  if (split_prefixed(path, kFunctionPrefix, segment, rest)) {
    Served* entry = current_of(std::string(segment));
    if (entry == nullptr) return std::nullopt;
    std::string prefix = "/fn/" + std::string(segment);
    return http::RoutedRequest{pool_of(*entry), prefix + "/...", prefix, std::string(rest)};
  }
  if (split_prefixed(path, kVersionPrefix, segment, rest)) {
    if (segment.size() != 64 || !store::parse_hex(segment)) return std::nullopt;
    Served* entry = version_by_id(std::string(segment));
    if (entry == nullptr) return std::nullopt;
    std::string prefix = "/v/" + std::string(segment);
    return http::RoutedRequest{pool_of(*entry), prefix + "/...", prefix, std::string(rest)};
  }
  auto match = routes_.match(path);
  if (!match) return std::nullopt;
  Served* entry = current_of(route_names_[match->target]);
  if (entry == nullptr) return std::nullopt;
  return http::RoutedRequest{pool_of(*entry), std::string(match->route), std::move(match->prefix),
                             std::move(match->path_info), std::move(match->captures)};
}

void Platform::rebuild_routes() {
  router::RouteTable routes;
  std::vector<std::string> names;
  for (const auto& [name, id] : current_) {
    Served* entry = served(id);
    // Functions deployed as `main:app --name NAME` have no manifest route:
    // they are served under /fn/NAME/.
    if (entry == nullptr || !entry->record.entrypoint.empty()) continue;
    if (Status added = routes.add(entry->config.route, names.size()); added) {
      names.push_back(name);
    } else {
      log::info("server: function {} is not served at its route: {}", name, added.message());
    }
  }
  routes_ = std::move(routes);
  route_names_ = std::move(names);
}

void Platform::tick(std::chrono::steady_clock::time_point now) {
  std::set<std::string> current_ids;
  for (const auto& [name, id] : current_) current_ids.insert(id);
  for (auto it = versions_.begin(); it != versions_.end();) {
    Served& entry = *it->second;
    if (entry.pool) entry.pool->tick(now);
    bool retire = !current_ids.count(it->first) && entry.pool && entry.holds == 0 &&
                  entry.state != Served::State::kStarting && entry.pool->unanswered() == 0 &&
                  now - entry.last_used >= options_.retire_after;
    if (retire) {
      log::info("server: {} version {}: no name points to it and it is idle: stopped", entry.record.name,
                it->first.substr(0, 12));
      entry.pool->stop();
      entry.pool.reset();
      entry.state = Served::State::kIdle;
    }
    ++it;
  }
}

size_t Platform::unanswered() const {
  size_t total = 0;
  for (const auto& [id, entry] : versions_) total += entry->pool ? entry->pool->unanswered() : 0;
  return total;
}

void Platform::deploy(DeployRequest request, Progress progress,
                      std::function<void(Outcome<std::vector<store::VersionRecord>>)> done) {
  if (stopping_) {
    done(OperationError{503, "coil server is shutting down"});
    return;
  }
  // 1-2 on a worker thread: unpack, validate, hash. It touches nothing but
  // its own staging directory, and posts the outcome back to the event loop.
  boost::asio::post(workers_, [this, request = std::move(request), progress = std::move(progress),
                               done = std::move(done)]() mutable {
    std::string staging = options_.data_dir + "/staging/" + random_hex(12);
    auto fail = [&](uint16_t status, std::string message) {
      std::error_code ec;
      fs::remove_all(staging, ec);
      boost::asio::post(io_, [done = std::move(done), status, message = std::move(message)] {
        done(OperationError{status, std::move(message)});
      });
    };
    Result<store::UnpackedBundle> unpacked = store::unpack_bundle(request.bundle, staging, options_.bundle_limits);
    if (!unpacked) return fail(400, unpacked.message());
    std::string unpacked_line = "unpacked " + std::to_string(unpacked->files) + " files (" +
                                std::to_string(unpacked->bytes / 1024) + " KiB)";
    boost::asio::post(io_, [progress, unpacked_line] { progress(unpacked_line); });
    if (Result<std::vector<config::FunctionConfig>> checked = read_functions(staging, request); !checked) {
      return fail(400, checked.message());
    }
    Result<store::Digest> digest = store::digest_tree(staging);
    if (!digest) return fail(400, digest.message());
    boost::asio::post(io_, [this, staging, tree = store::to_hex(*digest), request = std::move(request), progress,
                            done = std::move(done)]() mutable {
      // 3. Store the tree, on the event loop, where collect_trees() runs:
      // from here to finish_deploy() no other event can collect it.
      std::string stored = code_dir(tree);
      std::error_code ec;
      if (fs::exists(stored, ec)) {
        fs::remove_all(staging, ec);  // the same code is stored already
      } else {
        fs::rename(staging, stored, ec);
        if (ec) {
          fs::remove_all(staging, ec);
          return done(OperationError{500, "cannot store the code: " + ec.message()});
        }
      }
      Result<std::vector<config::FunctionConfig>> functions = read_functions(stored, request);
      if (!functions) {
        collect_trees();
        return done(OperationError{400, functions.message()});
      }
      finish_deploy(std::move(*functions), tree, std::move(request), progress, std::move(done));
    });
  });
}

std::optional<OperationError> Platform::route_conflict(const config::FunctionConfig& function) const {
  if (const char* reserved = reserved_route_prefix(function.route)) {
    return OperationError{400, "function " + function.name + ": route " + function.route +
                                   " is reserved on coil server (" + reserved +
                                   "); functions are also served under /fn/" + function.name + "/"};
  }
  std::string shape = router::route_shape(function.route);
  for (const auto& [name, id] : current_) {
    auto other = versions_.find(id);
    if (name != function.name && other != versions_.end() && other->second->record.entrypoint.empty() &&
        router::route_shape(other->second->config.route) == shape) {
      const std::string& route = other->second->config.route;
      return OperationError{409, "function " + function.name + ": route " + function.route +
                                     " is already served by function " + name +
                                     (route == function.route ? "" : " (as " + route + ")")};
    }
  }
  return std::nullopt;
}

void Platform::finish_deploy(std::vector<config::FunctionConfig> functions, std::string tree, DeployRequest request,
                             Progress progress,
                             std::function<void(Outcome<std::vector<store::VersionRecord>>)> done) {
  // 4. Routes must not collide with another function's, nor with the server's own.
  if (request.entrypoint.empty()) {  // else served under /fn/NAME/ only
    for (const config::FunctionConfig& function : functions) {
      if (std::optional<OperationError> conflict = route_conflict(function)) {
        collect_trees();
        done(*conflict);
        return;
      }
    }
  }
  // The versions this deploy starts. Each is held (never retired, never
  // forgotten by another deploy's failure) until this deploy ends.
  struct Pending {
    size_t left = 0;
    std::string error;
    std::vector<std::string> ids;
  };
  auto pending = std::make_shared<Pending>();
  pending->left = functions.size();
  auto end = [this, pending, done = std::move(done)](Outcome<std::vector<store::VersionRecord>> outcome) {
    for (const std::string& id : pending->ids) {
      Served* entry = served(id);
      if (entry == nullptr || --entry->holds > 0) continue;
      // A refused version that no other deploy holds and the registry does not know goes.
      Result<std::optional<store::VersionRecord>> known = registry_->version(id);
      if (std::holds_alternative<OperationError>(outcome) && known && !*known) forget_version(id, "deploy refused");
    }
    if (std::holds_alternative<OperationError>(outcome)) collect_trees();
    done(std::move(outcome));
  };
  auto finish = [this, pending, end]() {
    if (!pending->error.empty()) return end(OperationError{422, pending->error});
    // 6. Record the versions and move the names, all or none.
    std::vector<store::VersionRecord> records;
    std::vector<std::pair<std::string, std::string>> pointers;
    for (const std::string& id : pending->ids) {
      Served* entry = served(id);
      if (entry == nullptr) return end(OperationError{409, "the function was removed while it was being deployed"});
      // Another deploy may have taken the route while this one built.
      if (entry->record.entrypoint.empty()) {
        if (std::optional<OperationError> conflict = route_conflict(entry->config)) return end(*conflict);
      }
      Result<store::VersionRecord> stored = registry_->add_version(entry->record);
      if (!stored) return end(OperationError{500, stored.message()});
      entry->record = *stored;
      records.push_back(*stored);
      pointers.emplace_back(stored->name, stored->id);
    }
    if (Status s = registry_->point(pointers); !s) return end(OperationError{500, s.message()});
    for (const auto& [name, id] : pointers) {
      current_[name] = id;
      log::info("server: deployed {} version {}", name, id);
    }
    rebuild_routes();
    end(std::move(records));
  };
  // 5. Each version's dependencies, template and trial instance, all at once.
  for (config::FunctionConfig& function : functions) {
    store::VersionRecord record;
    record.name = function.name;
    record.tree = tree;
    record.entrypoint = request.entrypoint;
    record.id = store::version_id(tree, function.name, request.entrypoint);
    pending->ids.push_back(record.id);
    Served* entry = served(record.id);
    if (entry == nullptr) {
      auto created = std::make_unique<Served>();
      created->record = record;
      created->config = std::move(function);
      entry = created.get();
      versions_[record.id] = std::move(created);
    }
    ++entry->holds;
    entry->last_used = std::chrono::steady_clock::now();
    auto started = [pending, finish, name = entry->record.name, code = code_dir(tree)](Status s) {
      if (!s && pending->error.empty()) {
        pending->error = "function " + name + " failed to start: " + relative_to_bundle(s.message(), code);
      }
      if (--pending->left == 0) finish();
    };
    auto start = [this, id = record.id, progress, started] {
      Served* version = served(id);
      if (version == nullptr) return started(Status::error("it was removed meanwhile"));
      progress("starting " + version->record.name + " version " + id.substr(0, 12) +
               " (importing its code, and a trial instance)");
      start_version(*version, started);
    };
    bool needs_dependencies = entry->state == Served::State::kIdle && entry->config.dependencies.empty() &&
                              fs::exists(entry->config.source + "/requirements.txt");
    if (!needs_dependencies) {
      start();
      continue;
    }
    dependencies_->ensure(entry->config.source, progress,
                          [this, id = record.id, start, started](Result<std::string> volume) {
                            Served* version = served(id);
                            if (!volume) return started(Status::error(volume.message()));
                            if (version != nullptr) version->config.dependencies = *volume;
                            start();
                          });
  }
}

Outcome<std::vector<store::VersionRecord>> Platform::list() {
  Result<std::vector<store::VersionRecord>> all = registry_->current_versions();
  if (!all) return OperationError{500, all.message()};
  return std::move(*all);
}

Outcome<store::VersionRecord> Platform::current(const std::string& name) {
  Result<std::optional<store::VersionRecord>> record = registry_->current_version(name);
  if (!record) return OperationError{500, record.message()};
  if (!*record) return OperationError{404, "no function named " + name};
  return std::move(**record);
}

Outcome<std::vector<store::VersionRecord>> Platform::versions(const std::string& name) {
  Result<std::vector<store::VersionRecord>> all = registry_->versions(name);
  if (!all) return OperationError{500, all.message()};
  return std::move(*all);
}

Outcome<store::VersionRecord> Platform::rollback(const std::string& name, const std::string& version) {
  Outcome<store::VersionRecord> now = current(name);
  if (auto* error = std::get_if<OperationError>(&now)) return *error;
  store::VersionRecord target;
  if (version.empty()) {
    Result<std::optional<store::VersionRecord>> before = registry_->previous_version(name);
    if (!before) return OperationError{500, before.message()};
    if (!*before) {
      return OperationError{409, "function " + name + " has no version to roll back to before " +
                                     std::get<store::VersionRecord>(now).id.substr(0, 12)};
    }
    target = **before;
  } else {
    bool hex = std::all_of(version.begin(), version.end(),
                           [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
    if (!hex || version.size() > 64) {
      return OperationError{400, "version \"" + version + "\": not a version id (lower-case hex digits)"};
    }
    Result<std::vector<store::VersionRecord>> found = registry_->find_versions(name, version);
    if (!found) return OperationError{500, found.message()};
    if (found->empty()) return OperationError{404, "function " + name + " has no version " + version};
    if (found->size() > 1) return OperationError{409, "version " + version + " is ambiguous: give more digits"};
    target = found->front();
  }
  if (load_version(target) == nullptr) {
    return OperationError{500, "version " + target.id + " of " + name + " cannot be served (see the server log)"};
  }
  if (Status s = registry_->point({{name, target.id}}); !s) return OperationError{500, s.message()};
  current_[name] = target.id;
  rebuild_routes();
  log::info("server: {} rolled back to version {}", name, target.id);
  return target;
}

Outcome<bool> Platform::remove(const std::string& name) {
  Result<bool> removed = registry_->remove(name);
  if (!removed) return OperationError{500, removed.message()};
  if (!*removed) return OperationError{404, "no function named " + name};
  current_.erase(name);
  // Every version of it, also those a deploy is starting (that deploy then fails).
  std::vector<std::string> ids;
  for (const auto& [id, entry] : versions_) {
    if (entry->record.name == name) ids.push_back(id);
  }
  for (const std::string& id : ids) forget_version(id, "function " + name + " was removed");
  rebuild_routes();
  collect_trees();
  control_api_->end_log_streams(name);
  log::info("server: removed {}", name);
  return true;
}

void Platform::collect_trees() {
  Result<std::vector<std::string>> in_use = registry_->trees_in_use();
  if (!in_use) return;
  std::set<std::string> keep(in_use->begin(), in_use->end());
  for (const auto& [id, entry] : versions_) keep.insert(entry->record.tree);  // deploys in progress
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.data_dir + "/code", ec)) {
    if (!keep.count(entry.path().filename().string())) fs::remove_all(entry.path(), ec);
  }
  // Dependency volumes no kept tree asks for: every requirements.txt in the
  // kept trees (a superset of the functions' own) names the volume it uses.
  std::set<std::string> volumes;
  for (const auto& [id, entry] : versions_) {
    if (!entry->config.dependencies.empty()) volumes.insert(fs::path(entry->config.dependencies).filename());
  }
  for (const std::string& tree : keep) {
    for (auto it = fs::recursive_directory_iterator(code_dir(tree), ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->path().filename() != "requirements.txt" || !it->is_regular_file(ec)) continue;
      if (Result<std::string> volume = dependencies_->volume_of(it->path().parent_path().string())) {
        volumes.insert(fs::path(*volume).filename());
      }
    }
  }
  for (const auto& entry : fs::directory_iterator(options_.data_dir + "/deps", ec)) {
    if (!volumes.count(entry.path().filename().string())) {
      log::info("server: dependency volume {} is no longer used: removed", entry.path().filename().string());
      fs::remove_all(entry.path(), ec);
    }
  }
}

std::shared_ptr<runtime::FunctionPool> Platform::current_pool(const std::string& name) {
  Served* entry = current_of(name);
  return entry == nullptr ? nullptr : pool_of(*entry);
}

std::optional<std::string> Platform::manifest_route(const store::VersionRecord& version) const {
  if (!version.entrypoint.empty()) return std::nullopt;
  auto it = versions_.find(version.id);
  if (it == versions_.end()) return std::nullopt;
  return it->second->config.route;
}

std::vector<std::string> Platform::urls(const store::VersionRecord& version, const std::string& base) const {
  std::vector<std::string> urls{base + "/fn/" + version.name + "/", base + "/v/" + version.id + "/"};
  if (!options_.domain.empty()) {
    Result<store::Digest> digest = store::parse_hex(version.id);
    std::string port;
    if (size_t colon = base.rfind(':'); colon != std::string::npos && colon > 6) port = base.substr(colon);
    if (digest) urls.push_back("http://" + store::to_base32(*digest) + "." + options_.domain + port + "/");
  }
  return urls;
}

void Platform::stop_instances(std::function<void()> done) {
  stopping_ = true;
  auto left = std::make_shared<size_t>(1);
  auto one_done = [left, done = std::move(done)] {
    if (--*left == 0) done();
  };
  for (auto& [id, entry] : versions_) {
    if (!entry->pool) continue;
    ++*left;
    entry->pool->stop_instances(one_done);
  }
  one_done();
}

void Platform::stop() {
  stopping_ = true;
  for (auto& [id, entry] : versions_) {
    if (entry->pool) entry->pool->stop();
  }
}

}  // namespace coil::platform
