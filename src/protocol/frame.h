// The host <-> instance frame protocol.
//
// Host and instance talk over one AF_UNIX SOCK_STREAM socketpair per
// instance. The stream carries frames, back to back:
//
//   u32 payload_length | u8 type | u8 flags | u16 reserved (0) | u32 stream_id
//   payload (payload_length bytes)
//
// Integers are little-endian (both ends are the same binary on the same
// machine; the codec still fixes the order so that a frame dump is
// unambiguous). stream_id names one request; several streams may be in flight
// on one instance at a time and their frames may interleave, so a stream is
// the unit, not the connection. A stream socket (not SOCK_SEQPACKET) is used so
// that many frames can be written and read with one syscall (batching), and
// so that no per-message size limit applies; the payload limit below keeps a
// single frame from monopolising the socket.
//
// A request is one kRequestHead (whose payload ends with the first part of the
// body) followed by zero or more kRequestBody frames; the frame carrying
// kFlagEnd completes the body. Responses mirror that with kResponseHead and
// kResponseBody. kCancel (host -> instance) says the host is done with a
// stream; its payload says why: "timeout" (a deadline passed: the instance
// drops the stream) or "disconnect" (the client left: an ASGI HTTP request
// runs on to its end, its output going nowhere; a WebSocket app's send()
// raises, and it is cancelled if it has not ended a few seconds later).
//
// WebSockets ride on the same frames. The request head has scheme "ws"; the
// application accepts with a 101 response head (sec-websocket-protocol among
// its headers) or refuses with any other status; messages travel as body
// frames (kFlagText for text; a message over kBodyChunk in parts, each but the
// last with kFlagMore) in both directions; kWsClose from either side
// ends the stream (from the instance, it is the stream's final frame).
//
// Flow control: an ASGI instance keeps at most a window of response body
// bytes (its _WINDOW, 1 MiB) on the way to a stream's client. The host says
// kDrained with the count of body bytes it has written to the client socket
// since its last kDrained, for streams whose response is still open; a send()
// that would go past the window waits for it. A slow client so holds its
// app back (as a socket would), rather than making the host buffer the
// response. A handler instance runs one request at a time: the host stops
// reading its socket while a client has more than kPauseAbove bytes unsent.
// Toward a WebSocket app the other way round: the host stops reading the
// client while the app has more than kMaxWebSocketMessage bytes of messages
// it has not taken; the instance says kDrained as it takes them (a MiB at a
// time). So for a streamed request body: the host stops reading it while
// the app has not taken more than http::Connection::kBodyWindow (1 MiB) of
// it; the instance says kDrained as the app takes it (each 256 KiB), until
// the body's last part has come, and never after the stream's final frame.
//
// kReset (instance -> host) aborts a stream (the final frame of a cancelled stream,
// or of a response that cannot be completed). An instance says kReady once
// it can serve, or kFailed (and exits) if it cannot.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace coil::frame {

enum class Type : uint8_t {
  kRequestHead = 1,
  kRequestBody = 2,
  kResponseHead = 3,
  kResponseBody = 4,
  kCancel = 5,
  kReset = 6,
  kReady = 7,   // instance -> host, stream 0: started (ASGI: lifespan startup complete)
  kFailed = 8,  // instance -> host, stream 0: could not start; payload says why
  kWsClose = 9, // either way: a WebSocket closes; payload u16 code + UTF-8 reason
  kPageHints = 10,  // instance -> host, stream 0, once: the pages its first request copied
                    // (src/python/page_hints.h); passed on to the template
  kDrained = 11,    // host -> ASGI instance: the client took this many more bytes of the
                    // stream's response body (payload u64); see "Flow control" above.
                    // ASGI instance -> host: the app took this many more bytes of
                    // the client's messages (WebSocket) or request body
  kContinue = 12,   // ASGI instance -> host: the app waits for the request body; a client
                    // that sent "Expect: 100-continue" gets its 100 Continue now
  kCancelTaken = 13,  // ASGI instance -> host: its event loop took the kCancel of a stream
                      // that has not ended (it ends when the app's cancellation does)
  kRecycle = 14,    // ASGI instance -> host, stream 0: send no more requests, close the
                    // instance once those in flight have ended; payload says why
  kInputClosed = 15,  // host -> ASGI instance: the client closed its sending side (a FIN)
                      // while its request was in flight. receive() says http.disconnect, as
                      // under uvicorn; the stream goes on, and what the app still sends
                      // reaches a client that only half-closed
};

inline constexpr uint8_t kFlagEnd = 0x01;
// On body frames of a WebSocket stream: the message is text (else binary).
inline constexpr uint8_t kFlagText = 0x02;
// On body frames of a WebSocket stream: the message goes on in the stream's
// next body frame (a message larger than kBodyChunk travels in parts).
inline constexpr uint8_t kFlagMore = 0x04;
// The largest WebSocket message either way (uvicorn's default).
inline constexpr size_t kMaxWebSocketMessage = 16 * 1024 * 1024;
// The payload of a kCancel frame: why the host gave up on the stream.
inline constexpr std::string_view kCancelDisconnect = "disconnect";  // the client went away
inline constexpr std::string_view kCancelTimeout = "timeout";        // a deadline passed
inline constexpr size_t kHeaderSize = 12;
// The largest payload a peer accepts; larger bodies are split into chunks of
// kBodyChunk bytes.
inline constexpr uint32_t kMaxPayload = 1u << 20;
inline constexpr size_t kBodyChunk = 256 * 1024;
// The most page addresses a kPageHints frame carries (8 bytes each).
inline constexpr size_t kMaxPageHints = 4096;
// The largest response head (status and headers, as encoded) the host
// accepts; instances refuse to send larger ones, since a frame over
// kMaxPayload would end the whole stream.
inline constexpr size_t kMaxResponseHead = 64 * 1024;

// The encoded size of a list of headers (a range of (name, value) pairs of
// strings or string views).
template <typename Headers>
size_t encoded_size(const Headers& headers) {
  size_t size = 4;
  for (const auto& [name, value] : headers) size += 8 + name.size() + value.size();
  return size;
}

struct Frame {
  Type type;
  uint8_t flags;
  uint32_t stream;
  std::string_view payload;  // points into the reader's buffer
  bool end() const { return (flags & kFlagEnd) != 0; }
};

using Header = std::pair<std::string, std::string>;
// A header that points into someone else's bytes (a payload being decoded, a
// Python object being encoded).
using HeaderView = std::pair<std::string_view, std::string_view>;

// What the instance needs to know about a request besides headers and body.
// `route`, `prefix`, `path_info` and `captures` describe the route match
// (router::Match).
struct RequestHead {
  std::string method;
  std::string target;     // path and query exactly as received
  std::string version;    // "1.1" or "1.0"
  std::string scheme;     // "http"
  std::string client;     // "ip:port" of the peer
  std::string server;     // "ip:port" the request arrived on
  std::string host;       // the Host header, or "" when absent
  std::string route;      // the matched route as written in the manifest
  std::string prefix;     // the part of the decoded path the route matched (the whole path if exact)
  std::string path_info;  // the part of the path after a prefix route ("" if exact)
  std::vector<Header> captures;  // (name, segment) for each ":name" of the route, in order
  std::vector<Header> headers;   // names lower-cased, order and duplicates kept
};

// A request head decoded in place (what an instance builds its request
// objects from, without copying each field first): every view points into the
// payload it was decoded from and lives as long as it does.
struct RequestHeadView {
  std::string_view method, target, version, scheme, client, server, host, route, prefix, path_info;
  std::vector<HeaderView> captures;  // as in RequestHead
  std::vector<HeaderView> headers;   // as in RequestHead
};

struct ResponseHead {
  uint16_t status = 0;
  std::vector<Header> headers;
};

// Appends one complete frame to `out`. `payload` must not exceed kMaxPayload.
void append(std::string& out, Type type, uint8_t flags, uint32_t stream, std::string_view payload);

// Appends a request: a head frame with up to kBodyChunk bytes of body, then
// body frames for the rest. `end` says whether `body` is the whole body.
void append_request(std::string& out, uint32_t stream, const RequestHead& head,
                    std::string_view body, bool end);
// Same for a response.
void append_response(std::string& out, uint32_t stream, const ResponseHead& head,
                     std::string_view body, bool end);
// The same from headers that point elsewhere (no copy of each one first).
void append_response(std::string& out, uint32_t stream, uint16_t status, std::span<const HeaderView> headers,
                     std::string_view body, bool end);
// A response head's fields (status and headers) encoded apart, as the ASGI
// instance encodes them at http.response.start, and a response made of them:
// the same frames as append_response() from the same status and headers.
void encode_response_head(std::string& out, uint16_t status, std::span<const HeaderView> headers);
void append_response(std::string& out, uint32_t stream, std::string_view encoded_head, std::string_view body,
                     bool end);
// Body frames only (`body` may be empty when only the end is to be signalled).
void append_body(std::string& out, Type type, uint32_t stream, std::string_view body, bool end);

// A WebSocket message as body frames of `type` (kRequestBody from the host,
// kResponseBody from the instance): parts of up to kBodyChunk bytes, each but
// the last with kFlagMore, each with kFlagText for a text message.
void append_ws_message(std::string& out, Type type, uint32_t stream, std::string_view data, bool text);

// A kDrained frame (`bytes` of the stream's response body reached its client).
void append_drained(std::string& out, uint32_t stream, uint64_t bytes);
bool decode_drained(std::string_view payload, uint64_t& bytes);

// A WebSocket close (code and reason) as a kWsClose frame, and its decoding.
void append_ws_close(std::string& out, uint32_t stream, uint16_t code, std::string_view reason);
bool decode_ws_close(std::string_view payload, uint16_t& code, std::string& reason);

// Parses the payload of a head frame. On success `body` is the body part that
// followed the head in the same frame.
Status decode_request_head(std::string_view payload, RequestHead& head, std::string_view& body);
Status decode_request_head(std::string_view payload, RequestHeadView& head, std::string_view& body);
Status decode_response_head(std::string_view payload, ResponseHead& head, std::string_view& body);

// Splits a byte stream into frames. Feed it the bytes read so far; next()
// returns complete frames one at a time. Frames returned point into the
// buffer, and stay valid until the next call to write_area() or
// consume_returned() (either may move the buffer).
class Reader {
 public:
  // Returns the next complete frame, std::nullopt if more bytes are needed,
  // or sets `error` if the stream is corrupt (the peer must be dropped).
  std::optional<Frame> next(Status& error);
  // Where to read more bytes into; at least `min_space` bytes are available.
  char* write_area(size_t min_space = 64 * 1024);
  size_t write_space() const { return capacity_ - end_; }
  void commit(size_t n) { end_ += n; }
  // Drops the bytes of frames already returned, so the buffer can be reused.
  void consume_returned();
  bool empty() const { return begin_ == end_; }

 private:
  // Not a std::vector: growing one zero-fills the new bytes, which in an
  // instance writes (and so un-shares, after the fork) pages that a read may
  // never reach. Bytes past end_ are uninitialised.
  std::unique_ptr<char[]> buffer_;
  size_t capacity_ = 0;
  size_t begin_ = 0;  // first byte not yet returned as a frame
  size_t end_ = 0;    // one past the last byte read
};

}  // namespace coil::frame
