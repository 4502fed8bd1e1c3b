#include "http/response_writer.h"

#include <fmt/format.h>

#include <cstring>
#include <ctime>

#include "common/ascii.h"

namespace coil::http {

std::string_view reason_phrase(uint16_t status) {
  // The IANA HTTP Status Code Registry (RFC 9110 section 15 and the RFCs it
  // lists); 418 is RFC 9110's reserved code, with RFC 2324's phrase.
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
  }
}

std::string_view http_date() {
  static std::time_t cached_second = 0;
  static char buffer[40];
  std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    cached_second = now;
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(buffer, sizeof(buffer), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  }
  return buffer;
}

namespace {

bool is_framing_header(std::string_view name) {
  using ascii::iequals;
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection") ||
         iequals(name, "keep-alive");
}

}  // namespace

void append_head(std::string& out, uint16_t status, const std::vector<std::pair<std::string, std::string>>& headers,
                 BodyFraming framing, uint64_t content_length, bool keep_alive, bool announce_keep_alive) {
  out.append("HTTP/1.1 ");
  out.append(fmt::format_int(status).c_str());
  out.push_back(' ');
  out.append(reason_phrase(status));
  out.append("\r\n");
  bool has_date = false;
  for (const auto& [name, value] : headers) {
    if (is_framing_header(name)) continue;
    if (name.size() == 4 && strncasecmp(name.c_str(), "date", 4) == 0) has_date = true;
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  }
  if (!has_date) {
    out.append("date: ");
    out.append(http_date());
    out.append("\r\n");
  }
  switch (framing) {
    case BodyFraming::kContentLength:
      out.append("content-length: ");
      out.append(fmt::format_int(content_length).c_str());
      out.append("\r\n");
      break;
    case BodyFraming::kChunked:
      out.append("transfer-encoding: chunked\r\n");
      break;
    case BodyFraming::kUntilClose:
    case BodyFraming::kNone:
      break;
  }
  if (!keep_alive) out.append("connection: close\r\n");
  if (keep_alive && announce_keep_alive) out.append("connection: keep-alive\r\n");
  out.append("\r\n");
}

void append_chunk(std::string& out, std::string_view data) {
  if (data.empty()) return;  // an empty chunk would end the body
  out.append(fmt::format("{:x}\r\n", data.size()));
  out.append(data);
  out.append("\r\n");
}

void append_last_chunk(std::string& out) { out.append("0\r\n\r\n"); }

void append_text_response(std::string& out, uint16_t status, std::string_view body, bool keep_alive,
                          bool include_body, std::string_view extra_headers, bool announce_keep_alive,
                          std::string_view content_type) {
  std::string_view connection = !keep_alive             ? "connection: close\r\n"
                                : announce_keep_alive ? "connection: keep-alive\r\n"
                                                      : "";
  out.append(fmt::format("HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n"
                         "date: {}\r\n{}{}\r\n",
                         status, reason_phrase(status), content_type, body.size(), http_date(), extra_headers,
                         connection));
  if (include_body) out.append(body);
}

}  // namespace coil::http
