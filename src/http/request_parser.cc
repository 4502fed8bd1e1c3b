#include "http/request_parser.h"

#include <boost/beast/http/error.hpp>

#include "common/ascii.h"

namespace coil::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// An absolute-form target ("http://host:port/path?q", RFC 9112 3.2.2, which a
// server must accept) as the origin form the rest of coil sees ("/path?q"),
// and its authority ("host:port"). Anything else is returned as it is, with
// no authority.
std::string_view origin_form(std::string_view target, std::string_view& authority) {
  authority = {};
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() < scheme.size() || !ascii::iequals(target.substr(0, scheme.size()), scheme)) continue;
    std::string_view rest = target.substr(scheme.size());
    size_t path = rest.find_first_of("/?");
    if (path != std::string_view::npos && rest[path] == '?') return target;  // no path for the query: refused later
    authority = rest.substr(0, path);
    return path == std::string_view::npos ? "/" : rest.substr(path);
  }
  return target;
}

}  // namespace

void RequestParser::Impl::on_request_impl(bhttp::verb, beast::string_view method, beast::string_view target,
                                          int version, beast::error_code&) {
  method_.assign(method.data(), method.size());
  std::string_view authority;
  target_.assign(origin_form(view(target), authority));
  authority_.assign(authority);
  version_ = version;
}

void RequestParser::Impl::on_field_impl(bhttp::field name, beast::string_view name_string,
                                        beast::string_view value, beast::error_code& ec) {
  if (name == bhttp::field::content_length) {
    if (++content_length_fields_ > 1) {
      framing_error_ = "repeated Content-Length";
      ec = bhttp::error::bad_content_length;
      return;
    }
    // Digits only: no list form ("5, 5"), no sign, no spaces inside.
    bool digits = !value.empty() && value.size() <= 18;
    for (char c : value) digits = digits && c >= '0' && c <= '9';
    if (!digits) {
      framing_error_ = "invalid Content-Length";
      ec = bhttp::error::bad_content_length;
      return;
    }
  } else if (name == bhttp::field::transfer_encoding) {
    // Only the plain, single "chunked" coding is accepted: anything else
    // ("chunked, identity", "gzip, chunked", a repeated field) is a framing
    // ambiguity between us and whatever sits in front of us.
    if (++transfer_encoding_fields_ > 1 || !ascii::iequals(view(value), "chunked")) {
      framing_error_ = "unsupported Transfer-Encoding";
      ec = bhttp::error::bad_transfer_encoding;
      return;
    }
  } else if (name == bhttp::field::expect) {
    if (ascii::iequals(view(value), "100-continue")) expect_continue_ = true;
  }
  headers_.emplace_back(ascii::lowered(view(name_string)), std::string(value.data(), value.size()));
}

void RequestParser::Impl::on_header_impl(beast::error_code& ec) {
  if (content_length_fields_ > 0 && transfer_encoding_fields_ > 0) {
    framing_error_ = "both Content-Length and Transfer-Encoding";
    ec = bhttp::error::bad_transfer_encoding;
  }
}

void RequestParser::Impl::on_body_init_impl(boost::optional<std::uint64_t> const& length, beast::error_code&) {
  if (length) body_.reserve(static_cast<size_t>(std::min<uint64_t>(*length, 1u << 20)));
}

std::size_t RequestParser::Impl::on_body_impl(beast::string_view body, beast::error_code&) {
  body_.append(body.data(), body.size());
  return body.size();
}

std::size_t RequestParser::Impl::on_chunk_body_impl(std::uint64_t, beast::string_view body, beast::error_code&) {
  body_.append(body.data(), body.size());
  return body.size();
}

RequestParser::RequestParser(ParseLimits limits) : limits_(limits) { make_parser(); }

void RequestParser::make_parser() {
  parser_.emplace();
  // A backstop only: feed() checks the request line and the header block
  // against their own limits exactly, however the head is split into reads.
  parser_->header_limit(static_cast<std::uint32_t>(limits_.request_line + limits_.headers + 4));
  parser_->eager(false);  // stop after the head: the body limit depends on the route
  parser_->body_limit(boost::none);  // checked by the caller once the route is known
  head_reported_ = false;
  start_line_consumed_ = false;
  start_line_length_ = 0;
  head_bytes_ = 0;
  body_limit_.reset();
  error_status_ = 0;
  error_reason_.clear();
}

void RequestParser::reset() { make_parser(); }

void RequestParser::fail(uint16_t status, std::string reason) {
  error_status_ = status;
  error_reason_ = std::move(reason);
}

void RequestParser::begin_body(uint64_t limit) {
  body_limit_ = limit;
  parser_->body_limit(limit);
  parser_->eager(true);
}

RequestParser::Outcome RequestParser::feed(std::string_view data, size_t& consumed) {
  consumed = 0;
  if (!parser_->is_header_done()) {
    // Until Beast has consumed the request line (it does so as soon as the
    // line is complete), check its own limit: 414 rather than 431.
    if (!start_line_consumed_) {
      size_t line_end = data.find('\n');
      size_t line_length = line_end == std::string_view::npos ? data.size() : line_end;
      if (line_end != std::string_view::npos && line_end > 0 && data[line_end - 1] == '\r') --line_length;
      if (line_length > limits_.request_line) {
        fail(414, "request line too long");
        return Outcome::kError;
      }
    }
    // Obsolete line folding is refused rather than unfolded: a folded
    // Transfer-Encoding is a classic request-smuggling vector.
    std::string_view head = data.substr(0, data.find("\r\n\r\n"));
    if (head.find("\n ") != std::string_view::npos || head.find("\n\t") != std::string_view::npos) {
      fail(400, "folded header line");
      return Outcome::kError;
    }
    beast::error_code ec;
    size_t n = parser_->put(boost::asio::buffer(data.data(), data.size()), ec);
    consumed = n;
    if (n > 0 && !start_line_consumed_) {
      start_line_consumed_ = true;
      start_line_length_ = data.find('\n') + 1;
    }
    head_bytes_ += n;
    if (ec && ec != bhttp::error::need_more) return fail_with(ec);
    // Beast consumes complete fields as they arrive, so its own limit only
    // bounds what is pending; the header block's total is checked here.
    size_t fields = 0;
    if (start_line_consumed_) {
      size_t pending = parser_->is_header_done() ? 0 : data.size() - n;
      fields = head_bytes_ + pending - start_line_length_;
    } else if (size_t line_end = data.find('\n'); line_end != std::string_view::npos) {
      fields = data.size() - (line_end + 1);  // Beast waits for the whole head before consuming
    }
    if (fields > limits_.headers + 2) {
      fail(431, "request headers too large");
      return Outcome::kError;
    }
    if (!parser_->is_header_done()) return Outcome::kNeedMore;
  }
  if (!head_reported_) {
    head_reported_ = true;
    if (parser_->content_length()) parser_->declared_length_ = *parser_->content_length();
    return Outcome::kHeadDone;
  }
  // Beast compares Content-Length with its body limit only when the head
  // completes, before begin_body() could set it: check it here.
  if (parser_->declared_length_ && body_limit_ && *parser_->declared_length_ > *body_limit_) {
    fail(413, "body too large");
    return Outcome::kError;
  }
  while (consumed < data.size() && !parser_->is_done()) {
    beast::error_code ec;
    size_t n = parser_->put(boost::asio::buffer(data.data() + consumed, data.size() - consumed), ec);
    consumed += n;
    if (ec == bhttp::error::need_more) break;
    if (ec) return fail_with(ec);
    if (n == 0) break;
  }
  return parser_->is_done() ? Outcome::kDone : Outcome::kNeedMore;
}

RequestParser::Outcome RequestParser::fail_with(const beast::error_code& ec) {
  if (ec == bhttp::error::header_limit) {
    fail(431, "request headers too large");
  } else if (ec == bhttp::error::body_limit) {
    fail(413, "body too large");
  } else if (!parser_->framing_error_.empty()) {
    fail(400, parser_->framing_error_);
  } else {
    fail(400, ec.message());
  }
  return Outcome::kError;
}

}  // namespace coil::http
