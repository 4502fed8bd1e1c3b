// LogBook: each deployed function's output, for `coil logs`.
//
// Every line a function's processes print is appended to
// DATA/logs/<function>.log ("TIME [pid=PID] line"), so it survives a server
// restart; a file past kMaxFileBytes is rotated to <function>.log.1 (one old
// file kept), which bounds the disk a chatty function can use. Followers
// (`coil logs -f`) get each new line as it is appended.
//
// Single-threaded: the server's event loop.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace coil::platform {

class LogBook {
 public:
  static constexpr uint64_t kMaxFileBytes = 4u << 20;
  using Follower = std::function<void(std::string_view line)>;

  explicit LogBook(std::string directory);

  void append(const std::string& function, pid_t pid, std::string_view line);
  // The last `lines` lines of `function`'s output (oldest first).
  std::vector<std::string> tail(const std::string& function, size_t lines) const;
  // `follower` gets every line appended from now on, until unfollow(id).
  uint64_t follow(const std::string& function, Follower follower);
  void unfollow(uint64_t id);

 private:
  struct File {
    unique_fd fd;
    uint64_t size = 0;
  };
  std::string path_of(const std::string& function) const { return directory_ + "/" + function + ".log"; }
  File* file_of(const std::string& function);

  std::string directory_;
  std::map<std::string, File> files_;
  struct Subscription {
    std::string function;
    Follower follower;
  };
  std::map<uint64_t, Subscription> followers_;
  uint64_t next_id_ = 1;
};

}  // namespace coil::platform
