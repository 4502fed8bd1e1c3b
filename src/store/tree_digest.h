// Version ids: a SHA-256 over a canonical form of a code tree, so that the
// same code gets the same id however it was archived (entry order,
// timestamps, owners do not count).
//
// Canonical form (what is hashed, in order), for every entry under the root
// except the root itself, sorted by relative path (bytewise, '/' separated):
//   "d" path "\0"                       a directory
//   "f" path "\0" mode "\0" size "\0" contents   a regular file; mode is "644"
//                                       or "755" (executable by its owner)
//   "l" path "\0" target "\0"           a symbolic link
// with sizes in decimal. Anything else (devices, FIFOs) fails.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace coil::store {

using Digest = std::array<uint8_t, 32>;

// Incremental SHA-256 (OpenSSL's EVP underneath).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view data);
  Digest finish();

 private:
  void* context_;  // EVP_MD_CTX
};

Result<Digest> digest_tree(const std::string& root);

std::string to_hex(const Digest& digest);     // 64 lowercase hex digits
std::string to_base32(const Digest& digest);  // RFC 4648, lowercase, unpadded: 52 chars (aleph's host label)
// Parses either form back; nullopt-like failure for anything else.
Result<Digest> parse_hex(std::string_view text);
Result<Digest> parse_base32(std::string_view text);

// Constant-time comparison of two byte strings of any lengths (the time does
// not depend on where they differ; lengths are compared via their digests).
bool secrets_equal(std::string_view a, std::string_view b);

}  // namespace coil::store
