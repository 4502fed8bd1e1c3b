// Bundles: the archive a deploy uploads (a gzip-compressed tar of the code
// directory), packed by the CLI and unpacked by the server.
//
// Contract of unpack_bundle(): the archive is untrusted. It either extracts
// every entry under `destination` and returns what it wrote, or fails with a
// message naming the offending entry ("bundle: entry \"../x\": ...") and
// leaves `destination` removed — never half-written. Refused: absolute paths,
// ".." components, entries that would land outside `destination`, symbolic
// links whose target is absolute or leaves the bundle, hard links, device
// files, FIFOs, sockets, an archive larger than limits.max_archive_bytes or
// expanding past limits.max_expanded_bytes / limits.max_entries (a zip bomb),
// and anything that is not a (optionally gzip-compressed) tar archive.
// Extracted files get mode 0644 or 0755 (executable kept), directories 0755,
// owned by the server; timestamps and owners from the archive are ignored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace coil::store {

struct BundleLimits {
  uint64_t max_archive_bytes = 64ull << 20;    // the upload itself (--max-bundle-mb)
  uint64_t max_expanded_bytes = 512ull << 20;  // file contents once unpacked
  uint64_t max_entries = 100000;
};

struct UnpackedBundle {
  uint64_t files = 0;
  uint64_t bytes = 0;  // file contents written
};

// `destination` must not exist; it is created (with its parent).
Result<UnpackedBundle> unpack_bundle(std::string_view archive, const std::string& destination,
                                     const BundleLimits& limits = {});

// .coilignore: one pattern a line, '#' comments and blank lines skipped;
// gitignore-like: a pattern without '/' matches a name at any depth
// ("*.pyc", "__pycache__"); with a leading or inner '/' it is matched against
// the path relative to the code directory ("/build", "docs/*.md"); a trailing
// '/' matches directories only; a leading '!' re-includes. fnmatch(3) rules
// otherwise. Always ignored, whatever the file says: ".git/", "__pycache__/".
class IgnoreRules {
 public:
  static IgnoreRules parse(std::string_view text);
  // `relative_path` uses '/' separators, no leading '/'.
  bool ignored(std::string_view relative_path, bool is_directory) const;

 private:
  struct Rule {
    std::string pattern;
    bool negate = false;
    bool directory_only = false;
    bool anchored = false;  // matched against the whole relative path
  };
  std::vector<Rule> rules_;
};

// Packs `directory` (regular files, directories and symbolic links that stay
// inside it; .coilignore honoured if present) into a gzip-compressed tar with
// sorted entries and neutral metadata, so that the same tree packs to the
// same bytes. Fails on unreadable files and on anything unpack_bundle would
// refuse (with the path), so a user learns it before uploading.
Result<std::string> pack_directory(const std::string& directory);

}  // namespace coil::store
