#include "runtime/output_relay.h"

#include "common/log.h"

namespace coil::runtime {

OutputRelay::OutputRelay(boost::asio::io_context& io, unique_fd pipe, std::string prefix)
    : pipe_(io, pipe.release()), prefix_(std::move(prefix)) {}

void OutputRelay::start() { read(); }

void OutputRelay::emit(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::string text = prefix_;
  text.append(line);
  log::line(text);
}

void OutputRelay::read() {
  pipe_.async_read_some(boost::asio::buffer(buffer_), [self = shared_from_this()](
                                                          boost::system::error_code ec, size_t n) {
    std::string_view data(self->buffer_, n);
    while (!data.empty()) {
      size_t newline = data.find('\n');
      if (newline == std::string_view::npos) {
        self->partial_.append(data);
        if (self->partial_.size() >= kMaxLine) {
          self->emit(self->partial_);
          self->partial_.clear();
        }
        break;
      }
      if (self->partial_.empty()) {
        self->emit(data.substr(0, newline));
      } else {
        self->partial_.append(data.substr(0, newline));
        self->emit(self->partial_);
        self->partial_.clear();
      }
      data.remove_prefix(newline + 1);
    }
    if (ec) {
      if (!self->partial_.empty()) self->emit(self->partial_);
      self->partial_.clear();
      return;  // EOF or error: the child is gone
    }
    self->read();
  });
}

}  // namespace coil::runtime
