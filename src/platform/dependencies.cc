#include "platform/dependencies.h"

#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "store/tree_digest.h"

namespace coil::platform {
namespace fs = std::filesystem;
namespace {

// pip installs for this interpreter: the key changes with it.
constexpr const char* kPythonAbi = "cpython-311-x86_64-linux-gnu";
constexpr size_t kErrorLines = 25;

Result<std::string> read_requirements(const std::string& code_dir) {
  std::ifstream in(code_dir + "/requirements.txt");
  if (!in) return Status::error("cannot read requirements.txt");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether requirements.txt refers to anything but package names from the
// index: options (-r, -e, -c, --find-links...), paths, or URLs.
bool names_more_than_packages(std::string_view requirements) {
  while (!requirements.empty()) {
    size_t newline = requirements.find('\n');
    std::string_view line = requirements.substr(0, newline);
    requirements = newline == std::string_view::npos ? std::string_view() : requirements.substr(newline + 1);
    if (size_t comment = line.find('#'); comment != std::string_view::npos) line = line.substr(0, comment);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty()) continue;
    if (line.front() == '-' || line.front() == '.' || line.front() == '/' || line.find(':') != std::string_view::npos ||
        line.find('/') != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

// "https://host:port/simple" -> "https://host:port" (an allowed_outbound_hosts entry).
std::string origin_of(const std::string& url) {
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return {};
  size_t path = url.find('/', scheme + 3);
  return url.substr(0, path);
}

// Relays the build's response: each line to the deploy's progress, the last
// lines kept for the error, the exit code from the final line.
class BuildSink : public runtime::ResponseSink {
 public:
  using Done = std::function<void(int exit_code, std::string tail)>;
  BuildSink(DependencyBuilder::Progress progress, Done done)
      : progress_(std::move(progress)), done_(std::move(done)) {}

  void on_response_head(const frame::ResponseHead& head, std::string_view body, bool end) override {
    if (head.status != 200) {
      finish(-1, "the build answered " + std::to_string(head.status) + ": " + std::string(body));
      return;
    }
    take(body, end);
  }
  void on_response_body(std::string_view body, bool end) override { take(body, end); }
  void on_failure(uint16_t status, const std::string& message) override {
    finish(-1, "the build failed (" + std::to_string(status) + "): " + message);
  }

 private:
  void take(std::string_view body, bool end) {
    partial_.append(body);
    for (size_t newline; (newline = partial_.find('\n')) != std::string::npos;) {
      line(partial_.substr(0, newline));
      partial_.erase(0, newline + 1);
    }
    if (end) {
      if (!partial_.empty()) line(partial_);
      std::string tail;
      for (const std::string& kept : tail_) tail += kept + "\n";
      finish(exit_code_, tail);
    }
  }
  void line(const std::string& text) {
    constexpr std::string_view kExit = "coil-build-exit: ";
    if (text.rfind(kExit, 0) == 0) {
      exit_code_ = std::atoi(text.c_str() + kExit.size());
      return;
    }
    if (progress_) progress_(text);
    tail_.push_back(text);
    if (tail_.size() > kErrorLines) tail_.pop_front();
  }
  void finish(int code, std::string tail) {
    if (done_) std::exchange(done_, nullptr)(code, std::move(tail));
  }

  DependencyBuilder::Progress progress_;
  Done done_;
  std::string partial_;
  std::deque<std::string> tail_;
  int exit_code_ = -1;  // until the final line says
};

}  // namespace

struct DependencyBuilder::Build {
  std::shared_ptr<runtime::FunctionPool> pool;
  std::vector<std::function<void(Result<std::string>)>> waiters;
  std::vector<Progress> listeners;
  std::string output_dir;  // the builder's persistent volume
};

DependencyBuilder::DependencyBuilder(boost::asio::io_context& io, std::string data_dir, DependencyOptions options,
                                     runtime::ZygoteProcess& zygote, runtime::HostServices services)
    : io_(io),
      data_dir_(std::move(data_dir)),
      options_(std::move(options)),
      zygote_(zygote),
      services_(std::move(services)) {}

DependencyBuilder::~DependencyBuilder() {
  for (auto& [key, build] : builds_) {
    if (build->pool) build->pool->stop();
  }
}

Status DependencyBuilder::check() const {
  if (!options_.index_url.empty()) {
    std::string origin = origin_of(options_.index_url);
    if (origin.empty() || !config::parse_allowed_host(origin)) {
      return Status::error("--index-url: \"" + options_.index_url + "\" is not an http(s) URL");
    }
  }
  if (!options_.find_links.empty() && !fs::is_directory(options_.find_links)) {
    return Status::error("--find-links: " + options_.find_links + " is not a directory");
  }
  return Status::ok();
}

Result<std::string> DependencyBuilder::volume_of(const std::string& code_dir) const {
  Result<std::string> requirements = read_requirements(code_dir);
  if (!requirements) return requirements.status();
  store::Sha256 hash;
  hash.update("coil dependencies 1");
  hash.update(std::string_view("\0", 1));
  hash.update(kPythonAbi);
  hash.update(std::string_view("\0", 1));
  hash.update(*requirements);
  if (names_more_than_packages(*requirements)) {
    // What pip installs depends on files of this code (or URLs): the volume
    // is this code's own, never shared with another tree.
    Result<store::Digest> tree = store::digest_tree(code_dir);
    if (!tree) return tree.status();
    hash.update(std::string_view("\0", 1));
    hash.update(store::to_hex(*tree));
  }
  return data_dir_ + "/deps/" + store::to_hex(hash.finish());
}

void DependencyBuilder::ensure(const std::string& code_dir, Progress progress,
                               std::function<void(Result<std::string>)> done) {
  Result<std::string> volume = volume_of(code_dir);
  if (!volume) return done(volume.status());
  std::error_code ec;
  if (fs::is_directory(*volume, ec)) {
    progress("dependencies: requirements.txt already built (" + fs::path(*volume).filename().string().substr(0, 12) +
             ")");
    return done(*volume);
  }
  std::string key = fs::path(*volume).filename().string();
  if (auto it = builds_.find(key); it != builds_.end()) {
    it->second->waiters.push_back(std::move(done));
    it->second->listeners.push_back(std::move(progress));
    return;
  }
  auto build = std::make_unique<Build>();
  build->waiters.push_back(std::move(done));
  build->listeners.push_back(std::move(progress));

  // The build, as a function (see the header).
  config::FunctionConfig builder;
  // '_' is not allowed in function names: no user function can be named so.
  builder.name = "_build-" + key.substr(0, 12);
  builder.entrypoint = "coil._build:app";
  builder.source = code_dir;
  builder.route = "/...";
  builder.kind = config::Kind::kAsgi;
  builder.min_instances = 0;
  builder.max_instances = 1;
  builder.timeout_ms = 120000;                // until pip starts answering
  builder.stream_idle_timeout_ms = 15 * 60000;  // pip may compile quietly for a while
  builder.memory_mb = 2048;
  builder.tmp_mb = 2048;
  builder.max_processes = 512;
  builder.entrypoint_origin = "dependency build";
  config::Volume out;
  out.kind = config::Volume::Kind::kPersistent;
  out.name = "out";
  out.mount = "/out";
  builder.volumes.push_back(out);
  build->output_dir = data_dir_ + "/volumes/" + builder.name + "/out";  // where the zygote puts it
  // Inside the sandbox the volumes are at their mount points; without one
  // (--no-sandbox, no root) only at their host paths.
  bool mounted = zygote_.mounts_volumes();
  builder.environment.emplace_back("COIL_BUILD_OUT", mounted ? out.mount : build->output_dir);
  std::string pip_arguments;
  if (!options_.find_links.empty()) {
    config::Volume wheels;
    wheels.kind = config::Volume::Kind::kReadonly;
    wheels.mount = "/wheels";
    wheels.source = fs::absolute(options_.find_links).string();
    builder.volumes.push_back(wheels);
    pip_arguments += "--find-links '" + (mounted ? wheels.mount : wheels.source) + "' --no-build-isolation ";
    if (options_.index_url.empty()) pip_arguments += "--no-index ";
  }
  if (!options_.index_url.empty()) {
    pip_arguments += "--index-url '" + options_.index_url + "' ";
    if (Result<config::AllowedHost> index = config::parse_allowed_host(origin_of(options_.index_url))) {
      builder.allowed_outbound_hosts.push_back(*index);
    }
  }
  builder.environment.emplace_back("COIL_PIP_ARGS", pip_arguments);
  fs::remove_all(data_dir_ + "/volumes/" + builder.name, ec);  // a failed earlier build's

  runtime::HostServices services = services_;
  services.output_tap = nullptr;  // its output is the deploy's progress
  build->pool = std::make_shared<runtime::FunctionPool>(io_, builder, zygote_, services);
  Build& started = *build;
  builds_[key] = std::move(build);
  log::info("server: building dependencies {} for {}", key.substr(0, 12), code_dir);
  for (auto& listener : started.listeners) listener("dependencies: building requirements.txt with pip");

  started.pool->start([this, key](Status s) {
    auto it = builds_.find(key);
    if (it == builds_.end()) return;
    if (!s) return finish(key, Status::error("the dependency build could not start: " + s.message()));
    auto invocation = std::make_shared<runtime::Invocation>();
    invocation->id = 1;  // the only request of this pool (0 is not a stream id)
    invocation->head.method = "POST";
    invocation->head.target = "/";
    invocation->head.version = "1.1";
    invocation->head.scheme = "http";
    invocation->head.client = "127.0.0.1:0";
    invocation->head.server = "127.0.0.1:0";
    invocation->head.route = "/...";
    invocation->head.path_info = "/";
    invocation->started = runtime::Clock::now();
    invocation->sink = std::make_shared<BuildSink>(
        [this, key](const std::string& line) {
          if (auto found = builds_.find(key); found != builds_.end()) {
            for (auto& listener : found->second->listeners) listener(line);
          }
        },
        [this, key](int exit_code, std::string tail) {
          if (exit_code != 0) {
            return finish(key, Status::error("pip could not install requirements.txt (exit " +
                                             std::to_string(exit_code) + "):\n" + tail));
          }
          auto found = builds_.find(key);
          if (found == builds_.end()) return;
          std::error_code error;
          std::string stored = data_dir_ + "/deps/" + key;
          fs::create_directories(data_dir_ + "/deps", error);
          fs::rename(found->second->output_dir, stored, error);
          if (error) return finish(key, Status::error("cannot store the dependencies: " + error.message()));
          finish(key, stored);
        });
    it->second->pool->submit(invocation);
  });
}

void DependencyBuilder::finish(const std::string& key, Result<std::string> outcome) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return;
  std::unique_ptr<Build> build = std::move(it->second);
  builds_.erase(it);
  // The pool is stopped after this event: its sink may be what called us.
  boost::asio::post(io_, [pool = build->pool] { pool->stop(); });
  std::error_code ec;
  fs::remove_all(fs::path(build->output_dir).parent_path(), ec);
  if (outcome) {
    log::info("server: dependencies {} built", key.substr(0, 12));
  } else {
    log::info("server: dependencies {} failed: {}", key.substr(0, 12), outcome.message());
  }
  for (auto& waiter : build->waiters) waiter(outcome);
}

}  // namespace coil::platform
