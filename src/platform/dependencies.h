// Dependency volumes (aleph's, Appwrite's build step): a function whose code
// has a requirements.txt gets the packages it names, built once by pip into
// DATA/deps/<key>/ and shared read-only by every function with the same
// requirements. The key is a SHA-256 of requirements.txt and the Python ABI,
// so identical requirements are built once.
//
// The build is untrusted code (an sdist's setup.py), so it runs as a
// function: its own sandbox (namespaces, read-only root, the function user,
// seccomp, cgroups) with the code read-only at /code, a fresh volume at /out,
// the --find-links directory read-only at /wheels, and a network that reaches
// only the configured index, through the sandbox's proxy. The app it runs is
// python/coil/_build.py; pip's output streams back line by line.
//
// Single-threaded: the server's event loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/function_pool.h"
#include "runtime/zygote_process.h"

namespace coil::platform {

struct DependencyOptions {
  std::string index_url;   // pip's --index-url; "" = pip's default (unreachable without network)
  std::string find_links;  // a host directory of wheels (offline builds); "" = none
};

class DependencyBuilder {
 public:
  using Progress = std::function<void(const std::string& line)>;

  DependencyBuilder(boost::asio::io_context& io, std::string data_dir, DependencyOptions options,
                    runtime::ZygoteProcess& zygote, runtime::HostServices services);
  ~DependencyBuilder();

  // Checks the options (the index URL); called once at start.
  Status check() const;
  // The volume for `code_dir`'s requirements.txt, as it would be stored
  // (whether built yet or not).
  Result<std::string> volume_of(const std::string& code_dir) const;
  // Makes sure the volume exists: done(its directory), or done(pip's error).
  // Concurrent calls for the same requirements share one build.
  void ensure(const std::string& code_dir, Progress progress, std::function<void(Result<std::string>)> done);

 private:
  struct Build;
  void finish(const std::string& key, Result<std::string> outcome);

  boost::asio::io_context& io_;
  std::string data_dir_;
  DependencyOptions options_;
  runtime::ZygoteProcess& zygote_;
  runtime::HostServices services_;
  std::map<std::string, std::unique_ptr<Build>> builds_;  // in progress, by key
};

}  // namespace coil::platform
