#include "runtime/output_relay.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"

namespace coil::runtime {

OutputRelay::OutputRelay(boost::asio::io_context& io, unique_fd pipe, std::string prefix, Tap tap)
    : pipe_(io, pipe.release()), prefix_(std::move(prefix)), tap_(std::move(tap)), report_timer_(io) {}

void OutputRelay::start() { read(); }

bool OutputRelay::allow(size_t bytes) {
  auto now = std::chrono::steady_clock::now();
  tokens_ = std::min(kBurstBytes, tokens_ + kBytesPerSecond * std::chrono::duration<double>(now - refilled_).count());
  refilled_ = now;
  if (tokens_ < static_cast<double>(bytes)) return false;
  tokens_ -= static_cast<double>(bytes);
  return true;
}

void OutputRelay::report_dropped(bool now) {
  if (dropped_lines_ == 0) return;
  auto time = std::chrono::steady_clock::now();
  if (!now && time - reported_ < kReportInterval) return;
  reported_ = time;
  log::line(fmt::format("{}coil: {} lines ({} bytes) of output dropped: more than {} KiB/s", prefix_,
                        dropped_lines_, dropped_bytes_, static_cast<int>(kBytesPerSecond / 1024)));
  dropped_lines_ = dropped_bytes_ = 0;
}

void OutputRelay::emit(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!allow(line.size() + 1)) {
    ++dropped_lines_;
    dropped_bytes_ += line.size() + 1;
    if (!report_armed_) {
      // Reported with the next line let through, or by this timer if none
      // comes (the flood was the last of the output for a while).
      report_armed_ = true;
      report_timer_.expires_after(kReportInterval);
      report_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        self->report_armed_ = false;
        if (!ec) self->report_dropped(true);
      });
    }
    return;
  }
  report_dropped();
  std::string text = prefix_;
  text.append(line);
  log::line(text);
  if (tap_) tap_(line);
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
      self->report_dropped(true);
      return;  // EOF or error: the child is gone
    }
    self->read();
  });
}

}  // namespace coil::runtime
