#include "http/request_parser.h"

#include <boost/beast/http/error.hpp>

#include "common/ascii.h"

namespace coil::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// An absolute-form target ("http://host:port/path?q", RFC 9112 3.2.2, which a
// server must accept) as the origin form the rest of coil sees ("/path?q"; an
// empty path is "/", RFC 9110 4.2.3), and its authority ("host:port",
// `absolute` set). Anything else is returned as it is, with no authority.
std::string origin_form(std::string_view target, std::string_view& authority, bool& absolute) {
  authority = {};
  absolute = false;
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() < scheme.size() || !ascii::iequals(target.substr(0, scheme.size()), scheme)) continue;
    std::string_view rest = target.substr(scheme.size());
    size_t path = rest.find_first_of("/?");
    authority = rest.substr(0, path);
    absolute = true;
    if (path == std::string_view::npos) return "/";
    if (rest[path] == '?') {
      std::string origin(1, '/');
      origin.append(rest.substr(path));
      return origin;
    }
    return std::string(rest.substr(path));
  }
  return std::string(target);
}

}  // namespace

bool valid_host(std::string_view authority) {
  std::string_view host = authority;
  std::string_view port;
  bool has_port = false;
  if (authority.starts_with('[')) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    host = authority.substr(1, close - 1);
    for (char c : host) {
      if (!ascii::is_digit(c) && !(ascii::lower(c) >= 'a' && ascii::lower(c) <= 'f') && c != ':' &&
          c != '.') {
        return false;
      }
    }
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return false;
    has_port = !rest.empty();
    if (has_port) port = rest.substr(1);
  } else {
    size_t colon = authority.find(':');
    has_port = colon != std::string_view::npos;
    if (has_port) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    if (host.empty()) return false;
    for (char c : host) {
      if (!ascii::is_alnum(c) && std::string_view("-._~!$&'()*+,;=%").find(c) == std::string_view::npos) {
        return false;
      }
    }
  }
  if (port.size() > 5) return false;
  uint32_t number = 0;
  for (char c : port) {
    if (!ascii::is_digit(c)) return false;
    number = number * 10 + static_cast<uint32_t>(c - '0');
  }
  return number <= 65535;
}

void RequestParser::Impl::on_request_impl(bhttp::verb, beast::string_view method, beast::string_view target,
                                          int version, beast::error_code& ec) {
  method_.assign(method.data(), method.size());
  version_ = version;
  for (char c : view(target)) {
    // Beast lets obs-text and '#' through: neither belongs in a request target
    // (RFC 9112 3.2), and a fragment is never sent.
    if (static_cast<unsigned char>(c) >= 0x80 || c == '#') {
      refusal_ = c == '#' ? "'#' in request target" : "byte outside ASCII in request target";
      ec = bhttp::error::bad_target;
      return;
    }
  }
  std::string_view authority;
  bool absolute = false;
  target_.assign(origin_form(view(target), authority, absolute));
  authority_.assign(authority);
  if (absolute && !valid_host(authority)) {
    refusal_ = authority.find('@') != std::string_view::npos ? "userinfo in request target"
                                                             : "invalid host in request target";
    ec = bhttp::error::bad_target;
  }
}

void RequestParser::Impl::on_field_impl(bhttp::field name, beast::string_view name_string,
                                        beast::string_view value, beast::error_code& ec) {
  // A trailer field (after the last chunk) is counted against the header
  // limit by feed() and otherwise dropped: it may not change the framing,
  // and the function was given the head already.
  if (is_header_done()) return;
  if (name == bhttp::field::content_length) {
    if (++content_length_fields_ > 1) {
      refusal_ = "repeated Content-Length";
      ec = bhttp::error::bad_content_length;
      return;
    }
    // Digits only: no list form ("5, 5"), no sign, no spaces inside.
    bool digits = !value.empty() && value.size() <= 18;
    for (char c : value) digits = digits && c >= '0' && c <= '9';
    if (!digits) {
      refusal_ = "invalid Content-Length";
      ec = bhttp::error::bad_content_length;
      return;
    }
  } else if (name == bhttp::field::transfer_encoding) {
    // RFC 9112 6.3: "chunked" must be the last coding, applied once, else the
    // body's length is unknown (400); a list that is not one of plain tokens
    // ("chunked;q=1", "\"chunked\"", "chun ked", "chunked,") is refused as an
    // obfuscation rather than guessed at. Any other coding (gzip, identity,
    // ...) is one coil does not implement: 501 (RFC 9112 6.1).
    ++transfer_encoding_fields_;
    std::string_view list = view(value);
    while (true) {
      size_t comma = list.find(',');
      std::string_view coding = list.substr(0, comma);
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) coding.remove_prefix(1);
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) coding.remove_suffix(1);
      bool token = !coding.empty();
      for (char c : coding) token = token && ascii::is_token_char(c);
      if (!token || chunked_coding_) {
        refusal_ = !token ? "invalid Transfer-Encoding" : "chunked is not the last transfer coding";
        ec = bhttp::error::bad_transfer_encoding;
        return;
      }
      if (ascii::iequals(coding, "chunked")) {
        chunked_coding_ = true;
      } else if (unknown_coding_.empty()) {
        unknown_coding_ = coding;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
    if (!unknown_coding_.empty()) {
      refusal_status_ = 501;
      refusal_ = "transfer coding \"" + unknown_coding_ + "\" not implemented";
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
    refusal_ = "both Content-Length and Transfer-Encoding";
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
  chunk_left_ -= body.size();
  return body.size();
}

RequestParser::RequestParser(ParseLimits limits) : limits_(limits) { make_parser(); }

void RequestParser::make_parser() {
  parser_.emplace();
  // A backstop only: feed() checks the request line and the header block
  // against their own limits exactly, however the head is split into reads.
  // Twice the limits: a head of bare-LF lines is given to Beast with a CR
  // added to each (up to twice its size).
  parser_->header_limit(static_cast<std::uint32_t>(2 * (limits_.request_line + limits_.headers + 4)));
  parser_->eager(false);  // stop after the head: the body limit depends on the route
  parser_->body_limit(boost::none);  // checked by the caller once the route is known
  head_reported_ = false;
  start_line_consumed_ = false;
  start_line_length_ = 0;
  empty_lines_ = 0;
  head_bytes_ = 0;
  header_fields_ = 0;
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
  // Not eager: feed() takes the body one step (a chunk-size line, a run of
  // data) at a time, so that it sees every chunk-size line before Beast does.
}

// Beast waits for a whole chunk-size line, and after the last chunk for the
// whole trailer section, before parsing either, buffering them (our input)
// without a limit. `rest` is the unparsed input at a chunk boundary.
bool RequestParser::chunk_framing_too_large(std::string_view rest) {
  size_t start = rest.starts_with("\r\n") ? 2 : 0;  // the end of the previous chunk's data
  std::string_view window = rest.substr(0, start + kMaxChunkLine + 2);
  size_t line_end = window.find('\n', start);
  if (line_end == std::string_view::npos ? window.size() > start + kMaxChunkLine + 1
                                         : line_end - start > kMaxChunkLine + 1) {
    fail(400, "chunk-size line too long");
    return true;
  }
  if (line_end == std::string_view::npos) return false;
  // Beast ends the line at a CR: past a bare LF it would wait (and buffer)
  // for one without a limit.
  if (line_end == 0 || rest[line_end - 1] != '\r') {
    fail(400, "chunk-size line not ended by CRLF");
    return true;
  }
  std::string_view size = rest.substr(start, line_end - start);
  size = size.substr(0, size.find_first_of(";\r \t"));
  if (size.empty() || size.find_first_not_of('0') != std::string_view::npos)
    return false;  // not the last chunk
  // The last chunk: the trailer section follows, up to an empty line. It may
  // have what the header block left of the header limit (both counted with
  // their closing CRLF).
  size_t allowed = limits_.headers + 4 - header_fields_;
  std::string_view trailer = rest.substr(line_end + 1, allowed);
  size_t line_start = 0;
  for (size_t at = trailer.find('\n'); at != std::string_view::npos; at = trailer.find('\n', at + 1)) {
    if (at == 0 || trailer[at - 1] != '\r') {  // as above: Beast would wait for a CR
      fail(400, "trailer line not ended by CRLF");
      return true;
    }
    if (at == line_start + 1) break;  // the empty line: the end of the request
    line_start = at + 1;
  }
  if (rest.size() - (line_end + 1) <= allowed) return false;
  if (rest.substr(0, line_end + 1 + allowed).find("\r\n\r\n", line_end - 1) != std::string_view::npos) {
    return false;
  }
  fail(431, "request trailers too large");
  return true;
}

// Whether the head at the start of `input` (what is left of it: from the
// request line, or from a field line once Beast has taken the request line)
// has a line ended by a bare LF before its end: nullopt if not, else the
// length of the whole head up to and including its empty line, or 0 while
// that has not arrived.
std::optional<size_t> RequestParser::bare_lf_head_end(std::string_view input) {
  bool bare = false;
  size_t line_start = 0;
  for (size_t at = input.find('\n'); at != std::string_view::npos; at = input.find('\n', at + 1)) {
    bool crlf = at > 0 && input[at - 1] == '\r';
    bare = bare || !crlf;
    if (at - line_start == (crlf ? 1 : 0)) return bare ? std::optional<size_t>(at + 1) : std::nullopt;
    line_start = at + 1;
  }
  return bare ? std::optional<size_t>(0) : std::nullopt;
}

RequestParser::Outcome RequestParser::feed(std::string_view data, size_t& consumed) {
  consumed = 0;
  if (!parser_->is_header_done()) {
    if (!start_line_consumed_) {
      // Empty lines before a request line are ignored (RFC 9112 2.2): a client
      // may end a body with an extra CRLF. They count in the line's length.
      size_t skipped = 0;
      while (true) {
        if (data.substr(skipped, 2) == "\r\n") {
          skipped += 2;
        } else if (data.substr(skipped, 1) == "\n") {
          skipped += 1;
        } else {
          break;
        }
      }
      empty_lines_ += skipped;
      consumed = skipped;
      data.remove_prefix(skipped);
      // Until Beast has consumed the request line (it does so as soon as the
      // line is complete), check its own limit: 414 rather than 431.
      size_t line_end = data.find('\n');
      size_t line_length = line_end == std::string_view::npos ? data.size() : line_end;
      if (line_end != std::string_view::npos && line_end > 0 && data[line_end - 1] == '\r') --line_length;
      if (empty_lines_ + line_length > limits_.request_line) {
        // The method alone over the limit is longer than any coil implements:
        // 501 (RFC 9112 3).
        bool method = std::min(data.find(' '), line_length) > limits_.request_line;
        fail(method ? 501 : 414, method ? "method too long" : "request line too long");
        return Outcome::kError;
      }
      if (data.empty() || data == "\r") return Outcome::kNeedMore;  // perhaps another empty line
      // Beast knows HTTP/1.0 and HTTP/1.1 only. A later HTTP/1.x is served as
      // HTTP/1.1 (RFC 9110 2.5): Beast is given the line with that version
      // (same length, so `consumed` holds). Another major version is 505.
      std::string_view line = data.substr(0, line_length);
      if (line_end != std::string_view::npos && line.size() > 9 && line[line.size() - 9] == ' ' &&
          line.substr(line.size() - 8, 5) == "HTTP/" && ascii::is_digit(line[line.size() - 3]) &&
          line[line.size() - 2] == '.' && ascii::is_digit(line[line.size() - 1])) {
        if (line[line.size() - 3] != '1') {
          fail(505, "HTTP version not supported");
          return Outcome::kError;
        }
        if (line.back() > '1') {
          later_version_.assign(data);
          later_version_[line.size() - 1] = '1';
          data = later_version_;
        }
      }
    }
    // The header block so far, in bytes as received, when Beast has taken
    // `taken` bytes of `input`: it consumes complete fields as they arrive,
    // so its own limit only bounds what is pending.
    auto header_block = [this](std::string_view input, size_t taken) -> size_t {
      if (start_line_consumed_) return head_bytes_ + (input.size() - taken) - start_line_length_;
      size_t line_end = input.find('\n');  // Beast waits for the whole head before consuming
      return line_end == std::string_view::npos ? 0 : input.size() - (line_end + 1);
    };
    // Lines ended by a bare LF (RFC 9112 2.2 lets a recipient accept them, as
    // uvicorn and nginx do): Beast wants CRLF, so such a head is handed to
    // it rewritten, once it is complete; `raw_head` is then its length as
    // received.
    std::string_view received = data;
    size_t raw_head = 0;
    if (std::optional<size_t> end = bare_lf_head_end(data)) {
      if (*end == 0) {
        if (header_block(data, 0) > limits_.headers + 2) {
          fail(431, "request headers too large");
          return Outcome::kError;
        }
        return Outcome::kNeedMore;
      }
      raw_head = *end;
      with_crlf_.clear();
      for (char c : data.substr(0, raw_head)) {
        if (c == '\n' && (with_crlf_.empty() || with_crlf_.back() != '\r')) with_crlf_.push_back('\r');
        with_crlf_.push_back(c);
      }
      data = with_crlf_;
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
    // A rewritten head is complete: Beast takes all of it, or fails. What
    // is counted is what was received.
    size_t taken = raw_head == 0 ? n : n == data.size() ? raw_head : 0;
    consumed += taken;
    if (n > 0 && !start_line_consumed_) {
      start_line_consumed_ = true;
      start_line_length_ = received.find('\n') + 1;
    }
    head_bytes_ += taken;
    if (ec && ec != bhttp::error::need_more) return fail_with(ec);
    size_t fields = parser_->is_header_done() ? head_bytes_ - start_line_length_ : header_block(received, taken);
    if (fields > limits_.headers + 2) {
      fail(431, "request headers too large");
      return Outcome::kError;
    }
    if (!parser_->is_header_done()) return Outcome::kNeedMore;
    header_fields_ = head_bytes_ - start_line_length_;
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
    if (parser_->chunked() && parser_->chunk_left_ == 0 && chunk_framing_too_large(data.substr(consumed))) {
      return Outcome::kError;
    }
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
  } else if (!parser_->refusal_.empty()) {
    fail(parser_->refusal_status_, parser_->refusal_);
  } else {
    fail(400, ec.message());
  }
  return Outcome::kError;
}

}  // namespace coil::http
