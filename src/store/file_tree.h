// File trees on disk, read safely: what packing a bundle and digesting a code
// tree both need. Internal to the store.
//
// Contract: nothing here follows a symbolic link below the root it is given,
// at any component of any path, so a tree that is changed while it is read
// cannot redirect a read outside it. Every fd opened is O_CLOEXEC. Reasons in
// errors are for a person ("cannot stat: Permission denied"); values that may
// come from a user or an attacker are shown through in_quotes().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace coil::store {

// strerror(error), as a string.
std::string errno_text(int error);

// `text` for an error message: in double quotes, '"' and '\' backslashed,
// control characters as \xNN, and cut to its first `max_shown` bytes
// (followed by "...") when longer.
std::string in_quotes(std::string_view text, size_t max_shown = 200);

// Opens `relative` ('/'-separated, without empty, "." or ".." components)
// below the directory `root_fd` for reading, one component at a time with
// O_NOFOLLOW: a symbolic link anywhere on the path makes the open fail. On
// failure the fd is invalid and errno says why.
unique_fd open_beneath(int root_fd, const std::string& relative);

enum class EntryKind { kDirectory, kFile, kLink };

struct TreeEntry {
  std::string path;  // relative to the root, '/' separated
  EntryKind kind;
  std::string link_target;  // for kLink only
};

// How list_tree() reads one tree.
struct TreeListing {
  // The tree, as named in the refusal of a special file ("a bundle").
  std::string_view name;
  // Makes the caller's error from a path below the root ("" for the root
  // itself) and a reason ("cannot stat: ...", "is a FIFO; ..."). Required.
  std::function<Status(const std::string& path, const std::string& reason)> refuse;
  // If set, an entry for which it returns true is left out, and a directory
  // left out is not entered.
  std::function<bool(const std::string& path, bool is_directory)> skip;
  // A longer path (of an entry not skipped) is refused.
  size_t max_path_bytes = SIZE_MAX;
};

// Every directory, regular file and symbolic link (with its target) below
// `root_fd`, the root itself excluded, sorted by path bytewise. Links are
// recorded, never followed. Fails, through listing.refuse, on the first entry
// that cannot be read, is of another type (device, FIFO, socket) or has too
// long a path.
Result<std::vector<TreeEntry>> list_tree(int root_fd, const TreeListing& listing);

}  // namespace coil::store
