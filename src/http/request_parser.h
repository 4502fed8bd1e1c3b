// RequestParser: HTTP/1.1 request parsing on Boost.Beast's basic_parser,
// with coil's limits and a stricter reading of message framing.
//
// Beast does the parsing (request line, fields, chunked decoding); this
// class adds what a server in front of untrusted clients needs:
//   - the request line and the header block have separate limits, so the
//     answer can be 414 or 431;
//   - framing is unambiguous or refused: Content-Length together with
//     Transfer-Encoding, repeated Content-Length, "chunked" repeated or not
//     the last coding, a coding that is not a token (400); a transfer coding
//     other than "chunked", which coil does not implement (501, RFC 9112 6.1);
//   - the request line: HTTP/1.x with x > 1 is served as HTTP/1.1, another
//     major version is 505 (RFC 9110 2.5); a target with a byte outside
//     ASCII or a '#' is 400, as is an absolute-form target with userinfo or
//     without a valid host; a method longer than the request-line limit is
//     501; empty lines before the request line are skipped (RFC 9112 2.2),
//     counted in the request line's length;
//   - lines of the head may end with a bare LF (RFC 9112 2.2 allows it; so do
//     uvicorn and nginx); chunk-size lines may not;
//   - the body goes to a caller-owned string as it is parsed, up to a limit
//     set after the head is known (it depends on the route);
//   - what Beast buffers whole before parsing it, with no limit of its own,
//     is bounded: a chunk-size line (with its extensions) to kMaxChunkLine
//     (400), the trailer section after the last chunk to what is left of the
//     header limit (431). Memory per request stays bounded whatever is sent.
// Usage per request: feed() bytes until head_done(); inspect the head; call
// begin_body(limit); feed() until done(). reset() before the next request.
#pragma once

#include <boost/beast/http/basic_parser.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coil::http {

// Whether `authority` is a valid "host[:port]" (RFC 9110 7.2, RFC 3986 3.2.2):
// a registered name or IPv4 address, or an IPv6 address in brackets, and an
// optional port of up to 5 digits. No userinfo ("user@"), nothing else.
bool valid_host(std::string_view authority);

struct ParseLimits {
  size_t request_line = 8 * 1024;
  size_t headers = 32 * 1024;
};

class RequestParser {
 public:
  // The longest chunk-size line accepted, extensions included, CRLF not.
  static constexpr size_t kMaxChunkLine = 4 * 1024;

  enum class Outcome {
    kNeedMore,  // all input consumed, feed more
    kHeadDone,  // the head is complete (returned once per request)
    kDone,      // the whole request is complete
    kError,     // see error_status() / error_reason(); the connection must close
  };

  explicit RequestParser(ParseLimits limits = {});

  // Parses from `data`; `consumed` says how many bytes were used. Call again
  // with the rest after kHeadDone or when more input arrives.
  Outcome feed(std::string_view data, size_t& consumed);
  void begin_body(uint64_t limit);
  void reset();

  bool head_done() const { return parser_->is_header_done(); }
  bool done() const { return parser_->is_done(); }
  uint16_t error_status() const { return error_status_; }
  const std::string& error_reason() const { return error_reason_; }

  // The head (valid once head_done()).
  const std::string& method() const { return parser_->method_; }
  const std::string& target() const { return parser_->target_; }
  // The host of an absolute-form target ("" for the usual origin form): it
  // takes the place of the Host header (RFC 9112 3.2.2).
  const std::string& authority() const { return parser_->authority_; }
  int version() const { return parser_->version_; }
  // Field names lower-cased, values as received; order and duplicates kept.
  const std::vector<std::pair<std::string, std::string>>& headers() const { return parser_->headers_; }
  // Moves the headers out (headers() is then empty): for the request's
  // invocation, once the head has been checked.
  std::vector<std::pair<std::string, std::string>> take_headers() { return std::move(parser_->headers_); }
  bool keep_alive() const { return parser_->keep_alive(); }
  bool expects_continue() const { return parser_->expect_continue_; }
  std::optional<uint64_t> content_length() const { return parser_->declared_length_; }
  bool chunked() const { return parser_->chunked(); }
  // The body received so far; take_body() moves it out.
  std::string take_body() { return std::move(parser_->body_); }
  size_t body_size() const { return parser_->body_.size(); }

 private:
  class Impl : public boost::beast::http::basic_parser<true> {
   public:
    std::string method_;
    std::string target_;
    std::string authority_;
    int version_ = 11;
    std::vector<std::pair<std::string, std::string>> headers_;
    std::string body_;
    bool expect_continue_ = false;
    std::optional<uint64_t> declared_length_;
    int content_length_fields_ = 0;
    int transfer_encoding_fields_ = 0;
    bool chunked_coding_ = false;  // "chunked" was in a Transfer-Encoding
    std::string unknown_coding_;   // the first other coding seen
    // Why the head was refused, when Beast's own error would not say it right.
    uint16_t refusal_status_ = 400;
    std::string refusal_;
    uint64_t chunk_left_ = 0;  // data bytes of the current chunk not yet parsed

   private:
    void on_request_impl(boost::beast::http::verb, boost::beast::string_view method,
                         boost::beast::string_view target, int version, boost::beast::error_code&) override;
    void on_response_impl(int, boost::beast::string_view, int, boost::beast::error_code&) override {}
    void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                       boost::beast::string_view value, boost::beast::error_code& ec) override;
    void on_header_impl(boost::beast::error_code& ec) override;
    void on_body_init_impl(boost::optional<std::uint64_t> const& length, boost::beast::error_code&) override;
    std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code&) override;
    void on_chunk_header_impl(std::uint64_t size, boost::beast::string_view,
                              boost::beast::error_code&) override {
      chunk_left_ = size;
    }
    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   boost::beast::error_code&) override;
    void on_finish_impl(boost::beast::error_code&) override {}
  };

  void fail(uint16_t status, std::string reason);
  Outcome fail_with(const boost::beast::error_code& ec);
  bool chunk_framing_too_large(std::string_view rest);
  static std::optional<size_t> bare_lf_head_end(std::string_view input);
  void make_parser();

  ParseLimits limits_;
  std::optional<Impl> parser_;
  bool head_reported_ = false;
  bool start_line_consumed_ = false;
  size_t start_line_length_ = 0;
  size_t empty_lines_ = 0;     // bytes of CRLF skipped before the request line
  std::string later_version_;  // the input with an HTTP/1.x request line as HTTP/1.1
  std::string with_crlf_;      // a head with bare LF line ends, rewritten with CRLF
  size_t head_bytes_ = 0;
  size_t header_fields_ = 0;  // bytes of the header block, once the head is done
  std::optional<uint64_t> body_limit_;
  uint16_t error_status_ = 0;
  std::string error_reason_;
};

}  // namespace coil::http
