#include "runtime/instance.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "common/log.h"

namespace coil::runtime {

Instance::Instance(boost::asio::io_context& io, unique_fd socket, uint32_t token, InstanceEvents& events)
    : socket_(io, boost::asio::local::stream_protocol(), socket.release()), token_(token), events_(events) {}

Instance::~Instance() { close(); }

void Instance::start() { read(); }

void Instance::send(std::string_view frames) {
  if (closed_ || closing_) return;
  pending_.append(frames);
  if (write_in_progress_ || flush_posted_) return;
  // Write after the handlers already queued on the event loop (other
  // connections' requests that arrived in the same wake-up) have run, so
  // that they reach the instance in one write and one wake-up.
  flush_posted_ = true;
  boost::asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->flush_posted_ = false;
    if (!self->write_in_progress_) self->flush();
  });
}

void Instance::flush() {
  if (closed_) return;
  if (pending_.empty()) {
    if (closing_) close();
    return;
  }
  writing_.swap(pending_);
  pending_.clear();
  write_in_progress_ = true;
  boost::asio::async_write(socket_, boost::asio::buffer(writing_),
                           [self = shared_from_this()](boost::system::error_code ec, size_t) {
                             self->write_in_progress_ = false;
                             self->writing_.clear();
                             if (ec) {
                               self->lost();
                               return;
                             }
                             self->flush();
                           });
}

void Instance::read() {
  if (closed_ || closing_ || reading_ || read_paused_) return;
  reading_ = true;
  char* area = reader_.write_area();
  socket_.async_read_some(boost::asio::buffer(area, reader_.write_space()),
                          [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                            self->reading_ = false;
                            if (self->closed_ || self->closing_) return;
                            if (ec) {
                              self->lost();
                              return;
                            }
                            self->reader_.commit(n);
                            self->process();
                          });
}

void Instance::process() {
  Status error;
  while (!read_paused_) {
    std::optional<frame::Frame> f = reader_.next(error);
    if (!f) break;
    events_.on_frame(*this, *f);
    if (closed_ || closing_) return;
  }
  if (!error) {
    log::info("instance {} pid={} sent a corrupt frame stream: {}", events_.name(), pid_, error.message());
    kill();
    lost();
    return;
  }
  reader_.consume_returned();
  read();
}

void Instance::resume_reading() {
  if (!read_paused_) return;
  read_paused_ = false;
  boost::asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (!self->closed_ && !self->closing_ && !self->read_paused_ && !self->reading_) self->process();
  });
}

void Instance::lost() {
  if (closed_) return;
  bool report = !closing_;  // a closing instance is its pool's no longer
  close();
  if (report) events_.on_instance_lost(*this);
}

void Instance::close_when_written() {
  if (closed_ || closing_) return;
  closing_ = true;
  if (!write_in_progress_ && !flush_posted_) flush();  // closes now when nothing waits
}

void Instance::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void Instance::kill() {
  kill_requested_ = true;
  if (pidfd_) ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

void Instance::set_process(pid_t pid, unique_fd pidfd) {
  pid_ = pid;
  pidfd_ = std::move(pidfd);
  if (kill_requested_) kill();
}

}  // namespace coil::runtime
