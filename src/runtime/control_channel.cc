#include "runtime/control_channel.h"

#include <fcntl.h>

#include "common/log.h"

namespace coil::runtime {

ControlChannel::ControlChannel(boost::asio::io_context& io, unique_fd socket)
    : socket_(io, socket.release()) {
  socket_.non_blocking(true);
}

void ControlChannel::start(Handler handler) {
  handler_ = std::move(handler);
  wait();
}

Status ControlChannel::send(control::Message message) {
  if (!socket_.is_open()) return Status::error("control channel closed");
  if (pending_.empty()) {
    bool would_block = false;
    Status s = control::send(socket_.native_handle(), message, &would_block);
    if (!would_block) return s;
  }
  pending_.push_back(std::move(message));
  if (pending_.size() == 1) wait_writable();
  return Status::ok();
}

void ControlChannel::wait_writable() {
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                     [self = shared_from_this()](boost::system::error_code ec) {
                       if (ec || !self->socket_.is_open()) {
                         self->pending_.clear();
                         return;
                       }
                       while (!self->pending_.empty()) {
                         bool would_block = false;
                         Status s = control::send(self->socket_.native_handle(), self->pending_.front(), &would_block);
                         if (would_block) {
                           self->wait_writable();
                           return;
                         }
                         self->pending_.pop_front();
                         if (!s) {
                           log::info("control channel: {}; closing it", s.message());
                           self->pending_.clear();
                           boost::system::error_code ignored;
                           self->socket_.close(ignored);  // the reader then reports the channel closed
                           return;
                         }
                       }
                     });
}

void ControlChannel::close() {
  handler_ = nullptr;
  pending_.clear();
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void ControlChannel::wait() {
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [self = shared_from_this()](boost::system::error_code ec) {
                       if (!self->handler_) return;
                       if (ec) {
                         control::Message none;
                         auto handler = std::move(self->handler_);
                         handler(Status::error(ec.message()), none);
                         return;
                       }
                       while (self->handler_) {
                         control::Message message;
                         bool would_block = false;
                         Status s = control::receive(self->socket_.native_handle(), message, &would_block);
                         if (would_block) break;
                         if (!s) {
                           auto handler = std::move(self->handler_);
                           handler(s, message);
                           return;
                         }
                         self->handler_(s, message);
                       }
                       if (self->handler_) self->wait();
                     });
}

}  // namespace coil::runtime
