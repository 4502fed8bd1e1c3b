// The HTTP client the remote commands (coil deploy, ls, ...) use to talk to
// a `coil server` (docs/control-api.md), over libcurl.
//
// Contract: every request carries `Authorization: Bearer KEY`; the key is
// never written anywhere (not in messages, not in logs). Failing to reach the
// server or losing the connection is a Status naming the server URL; an HTTP
// error status is not a failure of send(): the caller reads status and body.
// Redirects are not followed, so the key only ever goes to the URL given.
//
// Thread-safety: one Client per thread; a Client runs one request at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace coil::cli {

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // of the final response, in order
  std::string body;  // empty when the body was handed to HttpRequest::on_body

  // The first value of header `name` (case-insensitive), or "".
  std::string header(std::string_view name) const;
};

struct HttpRequest {
  std::string method = "GET";  // GET, POST or DELETE
  // The path and query below the server URL ("/v1/functions"), already
  // encoded (see url_encode()).
  std::string target;
  std::string body;          // sent when non-empty, or always for POST (an empty POST has Content-Length: 0)
  std::string content_type;  // the body's; "" sends none
  std::vector<std::pair<std::string, std::string>> headers;  // more request headers

  // Streaming: when set, the body of a 2xx response goes to this callback
  // chunk by chunk as it arrives (and not into HttpResponse::body); other
  // responses are collected as usual, so that the caller can show the error.
  // Returning false stops the transfer: send() then fails with "cancelled".
  std::function<bool(std::string_view chunk)> on_body;
  // Upload progress: (bytes of the body sent so far, body size), called
  // repeatedly while the request is in flight.
  std::function<void(uint64_t sent, uint64_t total)> on_upload;

  // The whole exchange must finish within this; none for streams and
  // uploads whose duration depends on the server's work.
  std::optional<std::chrono::milliseconds> timeout;
};

class Client {
 public:
  // `server_url`: "http://HOST:PORT" or "https://...", optionally with a
  // path prefix; a trailing '/' is ignored. Fails on anything else, or on
  // a key that cannot be sent in a header (empty, control characters).
  static Result<Client> create(std::string server_url, std::string api_key);

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // Runs one request to completion (connections are reused between calls).
  // Fails when the server cannot be reached, the connection breaks, or the
  // timeout expires; the message names the server URL.
  Result<HttpResponse> send(const HttpRequest& request);

  const std::string& server_url() const { return server_url_; }

 private:
  struct Handle;
  Client(std::string server_url, std::string api_key, std::unique_ptr<Handle> handle);

  std::string server_url_;
  std::string api_key_;
  std::unique_ptr<Handle> handle_;
};

// Percent-encodes everything but RFC 3986's unreserved characters, for a
// query value or a path segment.
std::string url_encode(std::string_view text);

}  // namespace coil::cli
