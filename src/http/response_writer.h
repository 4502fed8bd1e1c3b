// Serialisation of HTTP/1.1 response heads and bodies into a byte buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coil::http {

// "OK", "Not Found", ... ("Unknown" for codes without a standard phrase).
std::string_view reason_phrase(uint16_t status);

// The current "Date" header value, regenerated at most once a second.
std::string_view http_date();

enum class BodyFraming {
  kContentLength,  // `content_length` bytes follow
  kChunked,        // chunks follow (append_chunk / append_last_chunk)
  kUntilClose,     // HTTP/1.0 without a length: the body ends when the connection closes
  kNone,           // 1xx, 204, 304: no body and no length
};

// Appends a status line and headers. Hop-by-hop and framing headers of
// `headers` (connection, keep-alive, transfer-encoding, content-length) are
// dropped: framing is the server's decision, given by `framing`.
// `announce_keep_alive`: say "connection: keep-alive" (HTTP/1.0 clients
// assume close otherwise).
void append_head(std::string& out, uint16_t status, const std::vector<std::pair<std::string, std::string>>& headers,
                 BodyFraming framing, uint64_t content_length, bool keep_alive, bool announce_keep_alive = false);

void append_chunk(std::string& out, std::string_view data);
void append_last_chunk(std::string& out);

// A complete plain-text response made by the host itself (errors).
void append_text_response(std::string& out, uint16_t status, std::string_view body, bool keep_alive,
                          bool include_body = true, std::string_view extra_headers = {},
                          bool announce_keep_alive = false,
                          std::string_view content_type = "text/plain; charset=utf-8");

}  // namespace coil::http
