// Unit tests for the serialisation of HTTP/1.1 responses.
#include "http/response_writer.h"

#include <gtest/gtest.h>

#include <ctime>
#include <regex>
#include <string>
#include <vector>

namespace coil::http {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Parsed {
  std::string status_line;
  Headers headers;  // as written
  std::string body;
  bool complete = false;  // the head ended with an empty line
};

Parsed parse(const std::string& out) {
  Parsed p;
  size_t end = out.find("\r\n\r\n");
  if (end == std::string::npos) return p;
  p.complete = true;
  p.body = out.substr(end + 4);
  std::string head = out.substr(0, end + 2);
  size_t pos = head.find("\r\n");
  p.status_line = head.substr(0, pos);
  pos += 2;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    std::string line = head.substr(pos, eol - pos);
    size_t colon = line.find(": ");
    EXPECT_NE(colon, std::string::npos) << "malformed header line: " << line;
    p.headers.emplace_back(line.substr(0, colon), line.substr(colon + 2));
    pos = eol + 2;
  }
  return p;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The values of every header named `name` (case-insensitive).
std::vector<std::string> values(const Parsed& p, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& [n, v] : p.headers) {
    if (lower(n) == lower(name)) out.push_back(v);
  }
  return out;
}

bool is_http_date(const std::string& s) {
  static const std::regex re(R"((Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT)");
  return std::regex_match(s, re);
}

TEST(ResponseWriter, HeadWithContentLength) {
  std::string out;
  append_head(out, 200, {{"content-type", "text/plain"}, {"X-Custom", "Value With Case"}},
              BodyFraming::kContentLength, 17, true);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete) << out;
  EXPECT_TRUE(p.body.empty());
  EXPECT_EQ(p.status_line, "HTTP/1.1 200 OK");
  EXPECT_EQ(values(p, "content-type"), std::vector<std::string>{"text/plain"});
  EXPECT_EQ(values(p, "x-custom"), std::vector<std::string>{"Value With Case"});
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"17"});
  EXPECT_TRUE(values(p, "transfer-encoding").empty());
  EXPECT_TRUE(values(p, "connection").empty());  // keep-alive is the HTTP/1.1 default
  std::vector<std::string> date = values(p, "date");
  ASSERT_EQ(date.size(), 1u);
  EXPECT_TRUE(is_http_date(date[0])) << date[0];
  // The function's headers come first, in order, names as given.
  ASSERT_GE(p.headers.size(), 2u);
  EXPECT_EQ(p.headers[0].first, "content-type");
  EXPECT_EQ(p.headers[1].first, "X-Custom");
}

TEST(ResponseWriter, FramingAndHopByHopHeadersOfTheFunctionAreDropped) {
  std::string out;
  append_head(out, 200,
              {{"Content-Length", "999"},
               {"transfer-encoding", "gzip, chunked"},
               {"Connection", "upgrade"},
               {"KEEP-ALIVE", "timeout=99"},
               {"x-kept", "1"},
               {"Content-Type", "application/json"}},
              BodyFraming::kContentLength, 2, true);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"2"});
  EXPECT_TRUE(values(p, "transfer-encoding").empty());
  EXPECT_TRUE(values(p, "connection").empty());
  EXPECT_TRUE(values(p, "keep-alive").empty());
  EXPECT_EQ(values(p, "x-kept"), std::vector<std::string>{"1"});
  EXPECT_EQ(values(p, "content-type"), std::vector<std::string>{"application/json"});
  EXPECT_EQ(out.find("999"), std::string::npos);
  EXPECT_EQ(out.find("timeout=99"), std::string::npos);
  EXPECT_EQ(out.find("upgrade"), std::string::npos);
}

TEST(ResponseWriter, RepeatedHeadersAreKeptInOrder) {
  std::string out;
  append_head(out, 200, {{"set-cookie", "a=1"}, {"x", "y"}, {"set-cookie", "b=2"}}, BodyFraming::kContentLength, 0,
              true);
  Parsed p = parse(out);
  EXPECT_EQ(values(p, "set-cookie"), (std::vector<std::string>{"a=1", "b=2"}));
}

TEST(ResponseWriter, ChunkedHead) {
  std::string out;
  append_head(out, 201, {{"content-length", "5"}}, BodyFraming::kChunked, 5, true);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(p.status_line, "HTTP/1.1 201 Created");
  EXPECT_EQ(values(p, "transfer-encoding"), std::vector<std::string>{"chunked"});
  EXPECT_TRUE(values(p, "content-length").empty());
}

TEST(ResponseWriter, NoBodyFraming) {
  for (uint16_t status : {uint16_t{204}, uint16_t{304}}) {
    std::string out;
    append_head(out, status, {{"content-length", "10"}, {"etag", "\"x\""}}, BodyFraming::kNone, 10, true);
    Parsed p = parse(out);
    ASSERT_TRUE(p.complete);
    EXPECT_TRUE(values(p, "content-length").empty()) << status;
    EXPECT_TRUE(values(p, "transfer-encoding").empty()) << status;
    EXPECT_EQ(values(p, "etag"), std::vector<std::string>{"\"x\""});
  }
}

TEST(ResponseWriter, UntilCloseFraming) {
  std::string out;
  append_head(out, 200, {}, BodyFraming::kUntilClose, 0, false);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete);
  EXPECT_TRUE(values(p, "content-length").empty());
  EXPECT_TRUE(values(p, "transfer-encoding").empty());
  EXPECT_EQ(values(p, "connection"), std::vector<std::string>{"close"});
}

TEST(ResponseWriter, ConnectionCloseWhenNotKeepingAlive) {
  std::string out;
  append_head(out, 500, {{"connection", "keep-alive"}}, BodyFraming::kContentLength, 0, false);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(p.status_line, "HTTP/1.1 500 Internal Server Error");
  EXPECT_EQ(values(p, "connection"), std::vector<std::string>{"close"});
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"0"});
}

TEST(ResponseWriter, DateOfTheFunctionIsKept) {
  std::string out;
  append_head(out, 200, {{"Date", "Tue, 01 Jan 2030 00:00:00 GMT"}}, BodyFraming::kContentLength, 0, true);
  Parsed p = parse(out);
  EXPECT_EQ(values(p, "date"), std::vector<std::string>{"Tue, 01 Jan 2030 00:00:00 GMT"});
}

TEST(ResponseWriter, AppendsToWhatIsAlreadyThere) {
  std::string out = "previous response bytes";
  append_head(out, 404, {}, BodyFraming::kContentLength, 3, true);
  ASSERT_EQ(out.rfind("previous response bytes", 0), 0u);
  Parsed p = parse(out.substr(23));
  EXPECT_EQ(p.status_line, "HTTP/1.1 404 Not Found");
}

TEST(ResponseWriter, LargeContentLength) {
  std::string out;
  append_head(out, 200, {}, BodyFraming::kContentLength, uint64_t{1} << 40, true);
  EXPECT_EQ(values(parse(out), "content-length"), std::vector<std::string>{"1099511627776"});
}

TEST(ResponseWriter, ReasonPhrases) {
  EXPECT_EQ(reason_phrase(200), "OK");
  EXPECT_EQ(reason_phrase(100), "Continue");
  EXPECT_EQ(reason_phrase(400), "Bad Request");
  EXPECT_EQ(reason_phrase(404), "Not Found");
  EXPECT_EQ(reason_phrase(408), "Request Timeout");
  EXPECT_EQ(reason_phrase(413), "Content Too Large");
  EXPECT_EQ(reason_phrase(414), "URI Too Long");
  EXPECT_EQ(reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(reason_phrase(502), "Bad Gateway");
  EXPECT_EQ(reason_phrase(503), "Service Unavailable");
  EXPECT_EQ(reason_phrase(504), "Gateway Timeout");
  // every registered code has its phrase
  EXPECT_EQ(reason_phrase(203), "Non-Authoritative Information");
  EXPECT_EQ(reason_phrase(205), "Reset Content");
  EXPECT_EQ(reason_phrase(208), "Already Reported");
  EXPECT_EQ(reason_phrase(305), "Use Proxy");
  EXPECT_EQ(reason_phrase(407), "Proxy Authentication Required");
  EXPECT_EQ(reason_phrase(416), "Range Not Satisfiable");
  EXPECT_EQ(reason_phrase(426), "Upgrade Required");
  EXPECT_EQ(reason_phrase(428), "Precondition Required");
  EXPECT_EQ(reason_phrase(505), "HTTP Version Not Supported");
  EXPECT_EQ(reason_phrase(508), "Loop Detected");
  EXPECT_EQ(reason_phrase(299), "Unknown");
  EXPECT_EQ(reason_phrase(599), "Unknown");
  std::string out;
  append_head(out, 299, {}, BodyFraming::kContentLength, 0, true);
  EXPECT_EQ(parse(out).status_line, "HTTP/1.1 299 Unknown");
}

TEST(ResponseWriter, HttpDateIsNow) {
  std::string date(http_date());
  ASSERT_TRUE(is_http_date(date)) << date;
  std::tm tm{};
  ASSERT_NE(strptime(date.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm), nullptr);
  std::time_t then = timegm(&tm);
  std::time_t now = std::time(nullptr);
  EXPECT_LE(std::abs(static_cast<long>(now - then)), 2L) << date;
}

TEST(ResponseWriter, Chunks) {
  std::string out;
  append_chunk(out, "hello");
  EXPECT_EQ(out, "5\r\nhello\r\n");
  append_chunk(out, std::string(300, 'x'));
  EXPECT_EQ(out, "5\r\nhello\r\n12c\r\n" + std::string(300, 'x') + "\r\n");
  append_chunk(out, "");  // would end the body: written as nothing
  EXPECT_EQ(out, "5\r\nhello\r\n12c\r\n" + std::string(300, 'x') + "\r\n");
  append_last_chunk(out);
  EXPECT_EQ(out, "5\r\nhello\r\n12c\r\n" + std::string(300, 'x') + "\r\n0\r\n\r\n");
}

TEST(ResponseWriter, ChunkSizesAreHex) {
  std::string out;
  append_chunk(out, std::string(0x10, 'a'));
  EXPECT_EQ(out.substr(0, 4), "10\r\n");
  out.clear();
  append_chunk(out, std::string(0xabc, 'a'));
  EXPECT_EQ(out.substr(0, 5), "abc\r\n");
  EXPECT_EQ(out.size(), 5 + 0xabcu + 2);
}

TEST(ResponseWriter, TextResponse) {
  std::string out;
  append_text_response(out, 404, "no route for /x\n", true);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete) << out;
  EXPECT_EQ(p.status_line, "HTTP/1.1 404 Not Found");
  EXPECT_EQ(values(p, "content-type"), std::vector<std::string>{"text/plain; charset=utf-8"});
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"16"});
  ASSERT_EQ(values(p, "date").size(), 1u);
  EXPECT_TRUE(is_http_date(values(p, "date")[0]));
  EXPECT_TRUE(values(p, "connection").empty());
  EXPECT_EQ(p.body, "no route for /x\n");
}

TEST(ResponseWriter, TextResponseClosing) {
  std::string out;
  append_text_response(out, 400, "bad request: x\n", false);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(p.status_line, "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(values(p, "connection"), std::vector<std::string>{"close"});
  EXPECT_EQ(p.body, "bad request: x\n");
}

TEST(ResponseWriter, TextResponseWithoutBodyKeepsItsLength) {
  std::string out;
  append_text_response(out, 503, "hello is overloaded, retry later\n", true, false);
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"33"});
  EXPECT_EQ(p.body, "");  // a HEAD response
}

TEST(ResponseWriter, TextResponseExtraHeaders) {
  std::string out;
  append_text_response(out, 503, "busy\n", false, true, "retry-after: 1\r\n");
  Parsed p = parse(out);
  ASSERT_TRUE(p.complete) << out;
  EXPECT_EQ(p.status_line, "HTTP/1.1 503 Service Unavailable");
  EXPECT_EQ(values(p, "retry-after"), std::vector<std::string>{"1"});
  EXPECT_EQ(values(p, "connection"), std::vector<std::string>{"close"});
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"5"});
  EXPECT_EQ(p.body, "busy\n");
}

TEST(ResponseWriter, EmptyTextResponse) {
  std::string out = "x";
  append_text_response(out, 200, "", true);
  Parsed p = parse(out.substr(1));
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(values(p, "content-length"), std::vector<std::string>{"0"});
  EXPECT_EQ(p.body, "");
}

}  // namespace
}  // namespace coil::http
