// Little-endian encoding primitives shared by the frame and control protocols.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coil::wire {

inline void put_u16(std::string& out, uint16_t v) {
  char b[2] = {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)};
  out.append(b, 2);
}

inline void put_u32(std::string& out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 4);
}

inline void put_u64(std::string& out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v));
  put_u32(out, static_cast<uint32_t>(v >> 32));
}

inline uint32_t get_u32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{u[0]} | uint32_t{u[1]} << 8 | uint32_t{u[2]} << 16 | uint32_t{u[3]} << 24;
}

// A length-prefixed (u32) byte string.
inline void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

// A count, then each (name, value) pair; `Pairs` is a range of pairs of
// strings or string views.
template <typename Pairs>
void put_pairs(std::string& out, const Pairs& pairs) {
  put_u32(out, static_cast<uint32_t>(pairs.size()));
  for (const auto& [name, value] : pairs) {
    put_str(out, name);
    put_str(out, value);
  }
}

// Bounds-checked reader over an encoded payload; every getter returns false
// (and leaves the cursor unusable) when the data is too short.
class Cursor {
 public:
  explicit Cursor(std::string_view data) : data_(data) {}
  bool u8(uint8_t& v) {
    if (data_.empty()) return false;
    v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  // A byte that must be 0 or 1.
  bool flag(bool& v) {
    uint8_t byte = 0;
    if (!u8(byte) || byte > 1) return false;
    v = byte == 1;
    return true;
  }
  bool u16(uint16_t& v) {
    if (data_.size() < 2) return false;
    const auto* u = reinterpret_cast<const unsigned char*>(data_.data());
    v = static_cast<uint16_t>(u[0] | u[1] << 8);
    data_.remove_prefix(2);
    return true;
  }
  bool u32(uint32_t& v) {
    if (data_.size() < 4) return false;
    v = get_u32(data_.data());
    data_.remove_prefix(4);
    return true;
  }
  bool u64(uint64_t& v) {
    uint32_t lo = 0, hi = 0;
    if (!u32(lo) || !u32(hi)) return false;
    v = uint64_t{lo} | uint64_t{hi} << 32;
    return true;
  }
  // A string view points into the data being read.
  bool str(std::string_view& s) {
    uint32_t n = 0;
    if (!u32(n) || data_.size() < n) return false;
    s = data_.substr(0, n);
    data_.remove_prefix(n);
    return true;
  }
  bool str(std::string& s) {
    std::string_view view;
    if (!str(view)) return false;
    s.assign(view);
    return true;
  }
  // Pairs of std::string or of std::string_view (pointing into the data).
  template <typename String>
  bool pairs(std::vector<std::pair<String, String>>& out) {
    uint32_t count = 0;
    if (!u32(count)) return false;
    out.clear();
    for (uint32_t i = 0; i < count; ++i) {
      std::pair<String, String> p;
      if (!str(p.first) || !str(p.second)) return false;
      out.push_back(std::move(p));
    }
    return true;
  }
  std::string_view rest() const { return data_; }

 private:
  std::string_view data_;
};

}  // namespace coil::wire
