#include "store/tree_digest.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/unique_fd.h"
#include "store/file_tree.h"

namespace coil::store {
namespace {

EVP_MD_CTX* evp(void* context) { return static_cast<EVP_MD_CTX*>(context); }

// EVP only fails on allocation failure or a broken OpenSSL install; neither is
// something a caller could handle, and a wrong digest would silently mix up
// versions, so stop here.
void check_evp(int ok, const char* what) {
  if (ok != 1) {
    std::fprintf(stderr, "coil: fatal: OpenSSL %s failed\n", what);
    std::abort();
  }
}

// How much of a value (a path, a version id) an error message shows.
constexpr size_t kMaxShown = 100;

// What went wrong at `path` ("" for the root) in the code tree at `root`.
Status tree_error(const std::string& root, const std::string& path, const std::string& what) {
  return Status::error("code tree " + in_quotes(root, kMaxShown) + ": " +
                       in_quotes(path.empty() ? "." : path, kMaxShown) + ": " + what);
}

Status hash_file(const std::string& root, int root_fd, const std::string& path, Sha256& hash) {
  unique_fd file = open_beneath(root_fd, path);
  if (!file) return tree_error(root, path, "cannot open: " + errno_text(errno));
  struct stat info {};
  if (::fstat(file.get(), &info) != 0) return tree_error(root, path, "cannot stat: " + errno_text(errno));
  if (!S_ISREG(info.st_mode)) return tree_error(root, path, "changed while the tree was being read");
  const char* mode = (info.st_mode & S_IXUSR) ? "755" : "644";
  std::string size = std::to_string(info.st_size);
  hash.update("f");
  hash.update(path);
  hash.update(std::string_view("\0", 1));
  hash.update(mode);
  hash.update(std::string_view("\0", 1));
  hash.update(size);
  hash.update(std::string_view("\0", 1));
  // Exactly st_size bytes are hashed: the size above promised that many.
  auto remaining = static_cast<uint64_t>(info.st_size);
  std::vector<char> buffer(1 << 16);
  while (remaining > 0) {
    ssize_t got = ::read(file.get(), buffer.data(), std::min<uint64_t>(buffer.size(), remaining));
    if (got < 0) {
      if (errno == EINTR) continue;
      return tree_error(root, path, "cannot read: " + errno_text(errno));
    }
    if (got == 0)
      return tree_error(root, path, "changed while the tree was being read (shorter than its size)");
    hash.update(std::string_view(buffer.data(), static_cast<size_t>(got)));
    remaining -= static_cast<uint64_t>(got);
  }
  return Status::ok();
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int base32_value(char c) {
  if (c >= 'a' && c <= 'z') return c - 'a';
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

constexpr char kBase32Alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
constexpr size_t kBase32Length = (sizeof(Digest) * 8 + 4) / 5;  // 52

}  // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (context_ == nullptr) check_evp(0, "EVP_MD_CTX_new");
  check_evp(EVP_DigestInit_ex(evp(context_), EVP_sha256(), nullptr), "SHA-256 init");
}

Sha256::~Sha256() { EVP_MD_CTX_free(evp(context_)); }

void Sha256::update(std::string_view data) {
  if (data.empty()) return;
  check_evp(EVP_DigestUpdate(evp(context_), data.data(), data.size()), "SHA-256 update");
}

Digest Sha256::finish() {
  Digest digest{};
  unsigned int length = 0;
  check_evp(EVP_DigestFinal_ex(evp(context_), digest.data(), &length), "SHA-256 final");
  if (length != digest.size()) check_evp(0, "SHA-256 length");
  // Ready for a new message, so a finished object is never in a half state.
  check_evp(EVP_DigestInit_ex(evp(context_), EVP_sha256(), nullptr), "SHA-256 init");
  return digest;
}

Result<Digest> digest_tree(const std::string& root) {
  // The root itself may be reached through a symbolic link (it is the
  // caller's path); nothing below it is followed.
  unique_fd root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd) {
    return Status::error("code tree " + in_quotes(root, kMaxShown) +
                         ": cannot open directory: " + errno_text(errno));
  }
  TreeListing listing;
  listing.name = "a code tree";
  listing.refuse = [&root](const std::string& path, const std::string& reason) {
    return tree_error(root, path, reason);
  };
  Result<std::vector<TreeEntry>> entries = list_tree(root_fd.get(), listing);
  if (!entries) return entries.status();

  Sha256 hash;
  constexpr std::string_view kNul("\0", 1);
  for (const TreeEntry& entry : *entries) {
    switch (entry.kind) {
      case EntryKind::kDirectory:
        hash.update("d");
        hash.update(entry.path);
        hash.update(kNul);
        break;
      case EntryKind::kLink:
        hash.update("l");
        hash.update(entry.path);
        hash.update(kNul);
        hash.update(entry.link_target);
        hash.update(kNul);
        break;
      case EntryKind::kFile: {
        Status status = hash_file(root, root_fd.get(), entry.path, hash);
        if (!status) return status;
      }
    }
  }
  return hash.finish();
}

std::string to_hex(const Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(digest.size() * 2);
  for (uint8_t byte : digest) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xf];
  }
  return out;
}

std::string to_base32(const Digest& digest) {
  std::string out;
  out.reserve(kBase32Length);
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t byte : digest) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += kBase32Alphabet[(buffer >> bits) & 0x1f];
    }
  }
  if (bits > 0) out += kBase32Alphabet[(buffer << (5 - bits)) & 0x1f];
  return out;
}

Result<Digest> parse_hex(std::string_view text) {
  auto invalid = [&] {
    return Status::error("version id " + in_quotes(text, kMaxShown) +
                         ": expected 64 hexadecimal digits (0-9, a-f)");
  };
  if (text.size() != sizeof(Digest) * 2) return invalid();
  Digest digest{};
  for (size_t i = 0; i < digest.size(); ++i) {
    int high = hex_value(text[2 * i]);
    int low = hex_value(text[2 * i + 1]);
    if (high < 0 || low < 0) return invalid();
    digest[i] = static_cast<uint8_t>((high << 4) | low);
  }
  return digest;
}

Result<Digest> parse_base32(std::string_view text) {
  auto invalid = [&] {
    return Status::error("version id " + in_quotes(text, kMaxShown) +
                         ": expected 52 base32 characters (a-z, 2-7) without padding");
  };
  if (text.size() != kBase32Length) return invalid();
  Digest digest{};
  size_t out = 0;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int value = base32_value(c);
    if (value < 0) return invalid();
    buffer = (buffer << 5) | static_cast<uint32_t>(value);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      digest[out++] = static_cast<uint8_t>(buffer >> bits);
    }
  }
  // 52 characters carry 260 bits; the 4 left over must be zero, so that each
  // digest has exactly one spelling (a host label must not have aliases).
  if ((buffer & ((1u << bits) - 1)) != 0) return invalid();
  return digest;
}

bool secrets_equal(std::string_view a, std::string_view b) {
  Sha256 hash;
  hash.update(a);
  Digest digest_a = hash.finish();
  hash.update(b);
  Digest digest_b = hash.finish();
  return CRYPTO_memcmp(digest_a.data(), digest_b.data(), digest_a.size()) == 0;
}

}  // namespace coil::store
