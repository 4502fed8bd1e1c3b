#include "runtime/control_channel.h"

#include <fcntl.h>

namespace coil::runtime {

ControlChannel::ControlChannel(boost::asio::io_context& io, unique_fd socket)
    : socket_(io, socket.release()) {
  socket_.non_blocking(true);
}

void ControlChannel::start(Handler handler) {
  handler_ = std::move(handler);
  wait();
}

Status ControlChannel::send(const control::Message& message) {
  if (!socket_.is_open()) return Status::error("control channel closed");
  // Control messages are small and rare; the socket buffer takes them whole.
  return control::send(socket_.native_handle(), message);
}

void ControlChannel::close() {
  handler_ = nullptr;
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
