// The host's end of a control socket (zygote or template): sends control
// messages and delivers received ones to a callback, on the event loop.
//
// The callback receives every message in order; when the peer closes the
// channel (or it fails) it is called once more with an error Status and the
// channel stops. Destroying the channel closes the socket.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <deque>
#include <functional>
#include <memory>

#include "common/status.h"
#include "common/unique_fd.h"
#include "protocol/control.h"

namespace coil::runtime {

class ControlChannel : public std::enable_shared_from_this<ControlChannel> {
 public:
  using Handler = std::function<void(Status, control::Message&)>;

  ControlChannel(boost::asio::io_context& io, unique_fd socket);
  void start(Handler handler);
  // Sends `message` now, or queues it (with its fds) until the socket takes
  // it: a burst of messages (200 functions building their templates at
  // once) can fill a socket buffer. Errors are immediate ones; a queued
  // message that later fails to go is logged and dropped, and the channel
  // is reported closed to the handler.
  Status send(control::Message message);
  // Stops delivering messages and closes the socket.
  void close();

 private:
  void wait();
  void wait_writable();

  boost::asio::posix::stream_descriptor socket_;
  Handler handler_;
  std::deque<control::Message> pending_;  // not yet taken by the socket, in order
};

}  // namespace coil::runtime
