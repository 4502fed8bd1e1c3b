// Host logging: every line goes to stderr, prefixed so that a reader can
// tell coil's own lines ("coil: ...") from a function's output
// ("[name pid=N] ...").
//
// Thread-safety: none needed; the host is a single-threaded event loop, and
// child processes (zygote, templates, instances) write to their own stderr.
// Access-log lines are buffered and flushed in batches (see flush()), every
// other line is written at once.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <string>
#include <string_view>

namespace coil::log {

// Writes one line (a '\n' is appended) to stderr immediately, after any
// buffered lines so that order is kept.
void line(std::string_view text);

// Appends one line to the buffer; it reaches stderr at the next flush() or
// when the buffer grows past a few KiB.
void buffered_line(std::string_view text);

// Appends the access-log line of one request to the buffer (as
// buffered_line): "coil: access FUNCTION METHOD TARGET STATUS 1.23ms", each
// empty field shown as "-". Formatted in place: it is written for every request.
void access(std::string_view function, std::string_view method, std::string_view target, unsigned status,
            std::chrono::nanoseconds elapsed);

// Writes out buffered lines. Returns true if anything was pending.
bool flush();

template <typename... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  line(fmt::format("coil: {}", fmt::format(format, std::forward<Args>(args)...)));
}

}  // namespace coil::log
