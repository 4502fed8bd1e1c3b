#include "common/log.h"

#include <unistd.h>

#include <cerrno>

namespace coil::log {
namespace {

constexpr size_t kFlushThreshold = 16 * 1024;
std::string& pending() {
  static std::string buffer;
  return buffer;
}

void write_all(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(STDERR_FILENO, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // stderr gone: nothing sensible left to do with a log line
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

bool flush() {
  std::string& buffer = pending();
  if (buffer.empty()) return false;
  write_all(buffer);
  buffer.clear();
  return true;
}

void line(std::string_view text) {
  std::string& buffer = pending();
  buffer.append(text);
  buffer.push_back('\n');
  flush();
}

void buffered_line(std::string_view text) {
  std::string& buffer = pending();
  buffer.append(text);
  buffer.push_back('\n');
  if (buffer.size() >= kFlushThreshold) flush();
}

}  // namespace coil::log
