#include "protocol/frame.h"

#include <cstring>

#include "protocol/wire.h"

namespace coil::frame {
namespace {

using wire::Cursor;
using wire::get_u32;
using wire::put_pairs;
using wire::put_u16;
using wire::put_u32;
using wire::put_str;

// Writes a frame header whose length is patched once the payload is known.
size_t begin_frame(std::string& out, Type type, uint8_t flags, uint32_t stream) {
  size_t at = out.size();
  put_u32(out, 0);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(flags));
  put_u16(out, 0);
  put_u32(out, stream);
  return at;
}

void finish_frame(std::string& out, size_t at) {
  auto length = static_cast<uint32_t>(out.size() - at - kHeaderSize);
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((length >> (8 * i)) & 0xff);
}

template <typename EncodeHead>
void append_message(std::string& out, Type head_type, Type body_type, uint32_t stream,
                    EncodeHead encode_head, std::string_view body, bool end) {
  std::string_view first = body.substr(0, kBodyChunk);
  std::string_view rest = body.substr(first.size());
  bool head_ends = end && rest.empty();
  size_t at = begin_frame(out, head_type, head_ends ? kFlagEnd : 0, stream);
  encode_head(out);
  out.append(first);
  finish_frame(out, at);
  if (!rest.empty()) append_body(out, body_type, stream, rest, end);
}

template <typename Headers>
void append_response_message(std::string& out, uint32_t stream, uint16_t status, const Headers& headers,
                             std::string_view body, bool end) {
  append_message(
      out, Type::kResponseHead, Type::kResponseBody, stream,
      [&](std::string& o) {
        put_u16(o, status);
        put_pairs(o, headers);
      },
      body, end);
}

// A RequestHead or a RequestHeadView: the same fields, copied or viewed.
template <typename Head>
Status decode_request_fields(std::string_view payload, Head& head, std::string_view& body) {
  Cursor c(payload);
  if (!c.str(head.method) || !c.str(head.target) || !c.str(head.version) || !c.str(head.scheme) || !c.str(head.client) ||
      !c.str(head.server) || !c.str(head.host) || !c.str(head.route) || !c.str(head.prefix) ||
      !c.str(head.path_info) || !c.pairs(head.captures) || !c.pairs(head.headers)) {
    return Status::error("truncated request head frame");
  }
  body = c.rest();
  return Status::ok();
}

}  // namespace

void append(std::string& out, Type type, uint8_t flags, uint32_t stream, std::string_view payload) {
  size_t at = begin_frame(out, type, flags, stream);
  out.append(payload);
  finish_frame(out, at);
}

void append_body(std::string& out, Type type, uint32_t stream, std::string_view body, bool end) {
  do {
    std::string_view chunk = body.substr(0, kBodyChunk);
    body.remove_prefix(chunk.size());
    uint8_t flags = (end && body.empty()) ? kFlagEnd : 0;
    append(out, type, flags, stream, chunk);
  } while (!body.empty());
}

void append_request(std::string& out, uint32_t stream, const RequestHead& head,
                    std::string_view body, bool end) {
  append_message(
      out, Type::kRequestHead, Type::kRequestBody, stream,
      [&](std::string& o) {
        put_str(o, head.method);
        put_str(o, head.target);
        put_str(o, head.version);
        put_str(o, head.scheme);
        put_str(o, head.client);
        put_str(o, head.server);
        put_str(o, head.host);
        put_str(o, head.route);
        put_str(o, head.prefix);
        put_str(o, head.path_info);
        put_pairs(o, head.captures);
        put_pairs(o, head.headers);
      },
      body, end);
}

void append_response(std::string& out, uint32_t stream, const ResponseHead& head,
                     std::string_view body, bool end) {
  append_response_message(out, stream, head.status, head.headers, body, end);
}

void append_response(std::string& out, uint32_t stream, uint16_t status, std::span<const HeaderView> headers,
                     std::string_view body, bool end) {
  append_response_message(out, stream, status, headers, body, end);
}

void encode_response_head(std::string& out, uint16_t status, std::span<const HeaderView> headers) {
  put_u16(out, status);
  put_pairs(out, headers);
}

void append_response(std::string& out, uint32_t stream, std::string_view encoded_head, std::string_view body,
                     bool end) {
  append_message(
      out, Type::kResponseHead, Type::kResponseBody, stream, [&](std::string& o) { o.append(encoded_head); }, body,
      end);
}

void append_ws_message(std::string& out, Type type, uint32_t stream, std::string_view data, bool text) {
  uint8_t kind = text ? kFlagText : 0;
  do {
    std::string_view part = data.substr(0, kBodyChunk);
    data.remove_prefix(part.size());
    append(out, type, static_cast<uint8_t>(kind | (data.empty() ? 0 : kFlagMore)), stream, part);
  } while (!data.empty());
}

void append_drained(std::string& out, uint32_t stream, uint64_t bytes) {
  char payload[8];
  for (int i = 0; i < 8; ++i) payload[i] = static_cast<char>(bytes >> (8 * i));
  append(out, Type::kDrained, kFlagEnd, stream, std::string_view(payload, sizeof(payload)));
}

bool decode_drained(std::string_view payload, uint64_t& bytes) {
  Cursor c(payload);
  return c.u64(bytes) && c.rest().empty();
}

void append_ws_close(std::string& out, uint32_t stream, uint16_t code, std::string_view reason) {
  std::string payload;
  put_u16(payload, code);
  payload.append(reason.substr(0, 123));  // a close frame's reason is at most 123 bytes
  append(out, Type::kWsClose, kFlagEnd, stream, payload);
}

bool decode_ws_close(std::string_view payload, uint16_t& code, std::string& reason) {
  Cursor c(payload);
  if (!c.u16(code)) return false;
  reason.assign(c.rest());
  return true;
}

Status decode_request_head(std::string_view payload, RequestHead& head, std::string_view& body) {
  return decode_request_fields(payload, head, body);
}

Status decode_request_head(std::string_view payload, RequestHeadView& head, std::string_view& body) {
  return decode_request_fields(payload, head, body);
}

Status decode_response_head(std::string_view payload, ResponseHead& head, std::string_view& body) {
  Cursor c(payload);
  if (!c.u16(head.status) || !c.pairs(head.headers)) {
    return Status::error("truncated response head frame");
  }
  body = c.rest();
  return Status::ok();
}

std::optional<Frame> Reader::next(Status& error) {
  size_t available = end_ - begin_;
  if (available < kHeaderSize) return std::nullopt;
  const char* p = buffer_.get() + begin_;
  uint32_t length = get_u32(p);
  auto type = static_cast<uint8_t>(p[4]);
  if (length > kMaxPayload) {
    error = Status::error("frame payload of " + std::to_string(length) + " bytes exceeds the limit");
    return std::nullopt;
  }
  if (type < static_cast<uint8_t>(Type::kRequestHead) || type > static_cast<uint8_t>(Type::kInputClosed)) {
    error = Status::error("unknown frame type " + std::to_string(type));
    return std::nullopt;
  }
  if (available < kHeaderSize + length) return std::nullopt;
  Frame f{static_cast<Type>(type), static_cast<uint8_t>(p[5]), get_u32(p + 8),
          std::string_view(p + kHeaderSize, length)};
  begin_ += kHeaderSize + length;
  return f;
}

char* Reader::write_area(size_t min_space) {
  if (capacity_ - end_ < min_space) {
    // Move the unreturned tail to the front before growing.
    if (begin_ > 0) {
      std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (capacity_ - end_ < min_space) {
      size_t capacity = end_ + min_space;
      std::unique_ptr<char[]> grown(new char[capacity]);  // default-initialised: not zeroed
      if (end_ > 0) std::memcpy(grown.get(), buffer_.get(), end_);
      buffer_ = std::move(grown);
      capacity_ = capacity;
    }
  }
  return buffer_.get() + end_;
}

void Reader::consume_returned() {
  if (begin_ == end_) {
    begin_ = end_ = 0;
  }
}

}  // namespace coil::frame
