#include "common/log.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

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

void access(std::string_view function, std::string_view method, std::string_view target, unsigned status,
            std::chrono::nanoseconds elapsed) {
  auto or_dash = [](std::string_view s) { return s.empty() ? std::string_view("-") : s; };
  // Milliseconds with two decimals, rounded half up, from integers: cheaper
  // than formatting a double.
  auto hundredths = static_cast<unsigned long long>((std::max<int64_t>(elapsed.count(), 0) + 5000) / 10000);
  std::string& buffer = pending();
  fmt::format_to(std::back_inserter(buffer), "coil: access {} {} {} {} {}.{:02}ms\n", or_dash(function),
                 or_dash(method), or_dash(target), status, hundredths / 100, hundredths % 100);
  if (buffer.size() >= kFlushThreshold) flush();
}

}  // namespace coil::log
