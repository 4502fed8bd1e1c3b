// The host's handle on one instance: the data socket (frames), the streams
// in flight on it, its pid/pidfd once the template reports them, and the
// relay of its output.
//
// An Instance belongs to exactly one FunctionPool and reports everything to
// it (responses, death). Streams are answered in the order they were sent
// (the handler model serves one at a time), so `in_flight()` is a FIFO whose
// front is the request being executed.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <deque>
#include <memory>
#include <string>

#include "common/unique_fd.h"
#include "protocol/frame.h"
#include "runtime/invocation.h"

namespace coil::runtime {

class InstanceEvents {
 public:
  virtual ~InstanceEvents() = default;
  virtual void on_frame(Instance& instance, const frame::Frame& frame) = 0;
  // The socket closed or failed: the instance is gone (or going).
  virtual void on_instance_lost(Instance& instance) = 0;
  // The function the instance runs, for its log lines.
  virtual const std::string& name() const = 0;
};

class Instance : public std::enable_shared_from_this<Instance> {
 public:
  Instance(boost::asio::io_context& io, unique_fd socket, uint32_t token, InstanceEvents& events);
  ~Instance();

  void start();
  // Queues frames for the instance; they are written in batches.
  void send(std::string_view frames);
  // Closes the socket; the instance exits when it reads EOF.
  void close();
  // Closes the socket once the frames sent so far are written (a WebSocket's
  // close, a cancel: the instance reads them before its EOF). From now on no
  // frame is passed on, and the socket's loss is not reported.
  void close_when_written();
  // SIGKILL through the pidfd (now, or as soon as the pidfd arrives).
  void kill();
  // Flow control for a handler instance (see frame.h): no frame is passed
  // on while paused (the instance blocks writing once its socket is full).
  // resume_reading() goes on with the frames already read, from a fresh
  // handler: never inside the caller's stack.
  void pause_reading() { read_paused_ = true; }
  void resume_reading();
  bool reading_paused() const { return read_paused_; }

  // Called when the template reports the fork.
  void set_process(pid_t pid, unique_fd pidfd);

  uint32_t token() const { return token_; }
  pid_t pid() const { return pid_; }
  bool closed() const { return closed_; }
  std::deque<std::shared_ptr<Invocation>>& in_flight() { return in_flight_; }
  const std::deque<std::shared_ptr<Invocation>>& in_flight() const { return in_flight_; }
  Clock::time_point idle_since() const { return idle_since_; }
  void mark_idle(Clock::time_point now) { idle_since_ = now; }
  // A recycled instance takes no new requests; its pool closes it once
  // those in flight have ended (see FunctionPool::retire_if_recycled).
  void recycle(std::string why) { recycle_reason_ = std::move(why); }
  bool recycled() const { return !recycle_reason_.empty(); }
  const std::string& recycle_reason() const { return recycle_reason_; }

 private:
  void read();
  // Passes on the complete frames read so far (until paused), then reads on.
  void process();
  void flush();
  void lost();

  boost::asio::local::stream_protocol::socket socket_;
  uint32_t token_;
  InstanceEvents& events_;
  frame::Reader reader_;
  std::string pending_;  // frames not yet handed to the socket
  std::string writing_;  // frames being written
  bool write_in_progress_ = false;
  bool flush_posted_ = false;
  bool closed_ = false;
  bool closing_ = false;  // close_when_written()
  bool kill_requested_ = false;
  std::string recycle_reason_;  // non-empty once recycled
  bool reading_ = false;      // an async read is outstanding
  bool read_paused_ = false;  // see pause_reading()
  pid_t pid_ = 0;
  unique_fd pidfd_;
  std::deque<std::shared_ptr<Invocation>> in_flight_;
  Clock::time_point idle_since_ = Clock::now();
};

}  // namespace coil::runtime
