#include "common/log.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

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

void append_decimal(std::string& out, unsigned long long value) {
  char digits[20];  // enough for any 64-bit value
  char* end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, static_cast<size_t>(end - digits));
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
  // Appended piece by piece rather than through fmt: this runs for every
  // request, and parsing a format string cost more than the rest of the line.
  auto or_dash = [](std::string_view s) { return s.empty() ? std::string_view("-") : s; };
  // Milliseconds with two decimals, rounded half up, from integers: cheaper
  // than formatting a double.
  auto hundredths = static_cast<unsigned long long>((std::max<int64_t>(elapsed.count(), 0) + 5000) / 10000);
  std::string& buffer = pending();
  for (std::string_view piece : {std::string_view("coil: access "), or_dash(function), std::string_view(" "),
                                 or_dash(method), std::string_view(" "), or_dash(target), std::string_view(" ")}) {
    buffer.append(piece);
  }
  append_decimal(buffer, status);
  buffer.push_back(' ');
  append_decimal(buffer, hundredths / 100);
  buffer.push_back('.');
  buffer.push_back(static_cast<char>('0' + hundredths % 100 / 10));
  buffer.push_back(static_cast<char>('0' + hundredths % 10));
  buffer.append("ms\n");
  if (buffer.size() >= kFlushThreshold) flush();
}

}  // namespace coil::log
