// Relays a child's stdout/stderr pipe into the host log, one line at a time,
// each prefixed "[FUNCTION pid=PID] ".
//
// Lifetime: reads until EOF (the last writer closed), then stops by itself;
// destroying the relay closes the pipe. Lines longer than kMaxLine are cut
// into several log lines.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <memory>
#include <string>

#include "common/unique_fd.h"

namespace coil::runtime {

class OutputRelay : public std::enable_shared_from_this<OutputRelay> {
 public:
  static constexpr size_t kMaxLine = 16 * 1024;

  OutputRelay(boost::asio::io_context& io, unique_fd pipe, std::string prefix);
  void start();

 private:
  void read();
  void emit(std::string_view line);

  boost::asio::posix::stream_descriptor pipe_;
  std::string prefix_;
  std::string partial_;
  char buffer_[8192];
};

}  // namespace coil::runtime
