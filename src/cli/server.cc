#include "cli/server.h"

#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/unique_fd.h"
#include "http/server.h"
#include "platform/platform.h"

namespace coil::cli {
namespace {

constexpr size_t kMinKeyLength = 16;

// The API key, from --key-file or $COIL_API_KEY. The variable is removed
// from the environment at once, so that neither the zygote nor any function
// (forked from it) inherits it.
Result<std::string> read_api_key(const std::string& key_file) {
  std::string key;
  if (char* from_env = std::getenv("COIL_API_KEY")) {
    key = from_env;
    // unsetenv() only unlinks the variable: its text would stay in the
    // process's original environment block, readable in /proc/PID/environ.
    ::explicit_bzero(from_env, key.size());
    ::unsetenv("COIL_API_KEY");
  }
  if (!key_file.empty()) {
    std::ifstream in(key_file);
    if (!in) return Status::error("--key-file: cannot read " + key_file);
    std::stringstream text;
    text << in.rdbuf();
    key = text.str();
    struct stat st {};
    if (::stat(key_file.c_str(), &st) == 0 && (st.st_mode & 0077) != 0) {
      log::info("WARNING: --key-file {} is readable by other users (chmod 600 it)", key_file);
    }
  }
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) {
    return Status::error("coil server needs an API key: --key-file FILE, or the environment variable COIL_API_KEY");
  }
  if (key.size() < kMinKeyLength) {
    return Status::error("the API key is too short: use at least " + std::to_string(kMinKeyLength) +
                         " characters (e.g. openssl rand -hex 32)");
  }
  return key;
}

// Letters, digits and '-' in dot-separated labels ("coil.example.com").
bool is_host_name(const std::string& name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.') return false;
  char previous = '.';
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || (c == '.' && previous != '.');
    if (!ok) return false;
    previous = c;
  }
  return true;
}

// Takes the data directory for this server, for as long as the returned
// descriptor is open (the process's life): two servers on one directory
// would each keep their own view of the registry and undo each other's
// deploys. The lock file holds the owner's pid, for the message.
Result<unique_fd> lock_data_directory(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string path = dir + "/server.lock";
  unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Status::error("--data: cannot open " + path + ": " + std::string(strerror(errno)));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    char owner[32] = {};
    ssize_t n = ::pread(fd.get(), owner, sizeof(owner) - 1, 0);
    std::string pid = n > 0 ? std::string(owner, static_cast<size_t>(n)) : "?";
    return Status::error("--data: " + dir + " is in use by another coil server (pid " + pid + ")");
  }
  std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
    return Status::error("--data: cannot write " + path + ": " + std::string(strerror(errno)));
  }
  return fd;
}

}  // namespace

int run_server(const ServerCommandOptions& options) {
  // 1. Configuration.
  Result<std::string> key = read_api_key(options.key_file);
  if (!key) {
    print_error(key.message());
    return kConfigError;
  }
  if (!options.domain.empty() && !is_host_name(options.domain)) {
    print_error("--domain: \"" + options.domain + "\" is not a host name");
    return kConfigError;
  }
  http::ServerOptions server_options;
  if (Status s = to_server_options(options.host, server_options); !s) {
    print_error(s.message());
    return kConfigError;
  }
  platform::PlatformOptions platform_options;
  platform_options.data_dir = data_directory(options.host);
  Result<unique_fd> data_lock = lock_data_directory(platform_options.data_dir);
  if (!data_lock) {
    print_error("coil server: " + data_lock.message());
    return kConfigError;
  }
  platform_options.domain = options.domain;
  platform_options.api_key = std::move(*key);
  platform_options.bundle_limits.max_archive_bytes = uint64_t{options.max_bundle_mb} << 20;
  platform_options.dependencies.index_url = options.index_url;
  if (!options.find_links.empty()) {
    platform_options.dependencies.find_links = std::filesystem::absolute(options.find_links).string();
  }

  // 2. The zygote and host services, while this process is still single-threaded.
  Result<std::unique_ptr<HostRuntime>> runtime = start_host_runtime(options.host);
  if (!runtime) {
    print_error(runtime.message());
    return 1;
  }
  HostRuntime& host = **runtime;
  boost::asio::io_context& io = host.io;

  // 3. The registry: every deployed function is served again, lazily.
  platform::Platform platform(io, std::move(platform_options), *host.zygote, host.services);
  if (Status s = platform.open(); !s) {
    print_error("coil server: " + s.message());
    host.zygote->stop();
    return 1;
  }

  // 4. Serve until SIGINT/SIGTERM, then drain.
  http::Server server(io, server_options, platform);
  return serve(
      server, host, [&](std::function<void()> done) { platform.stop_instances(std::move(done)); },
      [&] { platform.stop(); });
}

}  // namespace coil::cli
