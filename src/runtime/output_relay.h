// Relays a child's stdout/stderr pipe into the host log, one line at a time,
// each prefixed "[FUNCTION pid=PID] ".
//
// Lifetime: reads until EOF (the last writer closed), then stops by itself;
// destroying the relay closes the pipe. Lines longer than kMaxLine are cut
// into several log lines.
//
// Output floods are rate-limited: each relay may log kBurstBytes at once and
// kBytesPerSecond on average (a token bucket). Lines beyond that are read and
// dropped — the function never blocks on its own output — and a line says
// how much was dropped, once a second at most (and when the output ends). So
// a function printing
// gigabytes costs the host some CPU to drain the pipe, but neither memory nor
// disk.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/unique_fd.h"

namespace coil::runtime {

class OutputRelay : public std::enable_shared_from_this<OutputRelay> {
 public:
  static constexpr size_t kMaxLine = 16 * 1024;
  static constexpr double kBytesPerSecond = 256 * 1024;
  static constexpr double kBurstBytes = 1024 * 1024;
  static constexpr auto kReportInterval = std::chrono::seconds(1);

  // Also called with every line logged (without the prefix), e.g. to keep
  // a function's recent output for `coil logs`.
  using Tap = std::function<void(std::string_view line)>;

  OutputRelay(boost::asio::io_context& io, unique_fd pipe, std::string prefix, Tap tap = nullptr);
  void start();

 private:
  void read();
  void emit(std::string_view line);
  bool allow(size_t bytes);
  // Writes the "dropped" notice if lines were dropped since the last one, and
  // a second has passed since it (or `now`: the output ended).
  void report_dropped(bool now = false);

  boost::asio::posix::stream_descriptor pipe_;
  std::string prefix_;
  Tap tap_;
  std::string partial_;
  double tokens_ = kBurstBytes;
  std::chrono::steady_clock::time_point refilled_ = std::chrono::steady_clock::now();
  uint64_t dropped_lines_ = 0;
  uint64_t dropped_bytes_ = 0;
  // When the last "dropped" notice was written: at most one a second, so that
  // a flood shows as one line per second, not one per line let through.
  std::chrono::steady_clock::time_point reported_;
  boost::asio::steady_timer report_timer_;  // writes a pending notice when output stops
  bool report_armed_ = false;
  char buffer_[8192];
};

}  // namespace coil::runtime
