// RequestParser: HTTP/1.1 request parsing on Boost.Beast's basic_parser,
// with coil's limits and a stricter reading of message framing.
//
// Beast does the parsing (request line, fields, chunked decoding); this
// class adds what a server in front of untrusted clients needs:
//   - the request line and the header block have separate limits, so the
//     answer can be 414 or 431;
//   - framing is unambiguous or refused (400): Content-Length together with
//     Transfer-Encoding, repeated Content-Length, any Transfer-Encoding other
//     than exactly "chunked";
//   - the body goes to a caller-owned string as it is parsed, up to a limit
//     set after the head is known (it depends on the route).
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

struct ParseLimits {
  size_t request_line = 8 * 1024;
  size_t headers = 32 * 1024;
};

class RequestParser {
 public:
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
    std::string framing_error_;

   private:
    void on_request_impl(boost::beast::http::verb, boost::beast::string_view method,
                         boost::beast::string_view target, int version, boost::beast::error_code&) override;
    void on_response_impl(int, boost::beast::string_view, int, boost::beast::error_code&) override {}
    void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                       boost::beast::string_view value, boost::beast::error_code& ec) override;
    void on_header_impl(boost::beast::error_code& ec) override;
    void on_body_init_impl(boost::optional<std::uint64_t> const& length, boost::beast::error_code&) override;
    std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code&) override;
    void on_chunk_header_impl(std::uint64_t, boost::beast::string_view, boost::beast::error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   boost::beast::error_code&) override;
    void on_finish_impl(boost::beast::error_code&) override {}
  };

  void fail(uint16_t status, std::string reason);
  Outcome fail_with(const boost::beast::error_code& ec);
  void make_parser();

  ParseLimits limits_;
  std::optional<Impl> parser_;
  bool head_reported_ = false;
  bool start_line_consumed_ = false;
  size_t start_line_length_ = 0;
  size_t head_bytes_ = 0;
  std::optional<uint64_t> body_limit_;
  uint16_t error_status_ = 0;
  std::string error_reason_;
};

}  // namespace coil::http
