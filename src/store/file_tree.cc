#include "store/file_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace coil::store {
namespace {

const char* special_file_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "of an unsupported file type";
}

// The error is the reason only; the caller names the link.
Result<std::string> read_link_at(int dir_fd, const char* name) {
  std::string target(256, '\0');
  while (true) {
    ssize_t length = ::readlinkat(dir_fd, name, target.data(), target.size());
    if (length < 0) return Status::error("cannot read symbolic link: " + errno_text(errno));
    if (static_cast<size_t>(length) < target.size()) {
      target.resize(static_cast<size_t>(length));
      return target;
    }
    // The target may have been cut short: retry with room to spare.
    target.resize(target.size() * 2);
  }
}

Status list_directory(int dir_fd, const std::string& prefix, const TreeListing& listing,
                      std::vector<TreeEntry>& out) {
  // fdopendir takes the fd it is given; keep dir_fd for the *at() calls.
  int listing_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (listing_fd < 0) return listing.refuse(prefix, "cannot read directory: " + errno_text(errno));
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(listing_fd), ::closedir);
  if (!dir) {
    int error_number = errno;
    ::close(listing_fd);
    return listing.refuse(prefix, "cannot read directory: " + errno_text(error_number));
  }
  while (true) {
    errno = 0;
    dirent* item = ::readdir(dir.get());
    if (item == nullptr) {
      if (errno != 0) return listing.refuse(prefix, "cannot read directory: " + errno_text(errno));
      return Status::ok();
    }
    std::string_view name = item->d_name;
    if (name == "." || name == "..") continue;
    std::string path = prefix.empty() ? std::string(name) : prefix + "/" + std::string(name);
    struct stat info {};
    if (::fstatat(dir_fd, item->d_name, &info, AT_SYMLINK_NOFOLLOW) != 0) {
      return listing.refuse(path, "cannot stat: " + errno_text(errno));
    }
    bool is_directory = S_ISDIR(info.st_mode);
    if (listing.skip && listing.skip(path, is_directory)) continue;
    if (path.size() > listing.max_path_bytes) {
      return listing.refuse(path,
                            "has a path longer than " + std::to_string(listing.max_path_bytes) + " bytes");
    }
    if (is_directory) {
      out.push_back({path, EntryKind::kDirectory, {}});
      unique_fd child(::openat(dir_fd, item->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) return listing.refuse(path, "cannot open directory: " + errno_text(errno));
      Status status = list_directory(child.get(), path, listing, out);
      if (!status) return status;
    } else if (S_ISREG(info.st_mode)) {
      out.push_back({path, EntryKind::kFile, {}});
    } else if (S_ISLNK(info.st_mode)) {
      Result<std::string> target = read_link_at(dir_fd, item->d_name);
      if (!target) return listing.refuse(path, target.message());
      out.push_back({path, EntryKind::kLink, std::move(target.value())});
    } else {
      return listing.refuse(path, std::string("is ") + special_file_kind(info.st_mode) + "; " +
                                      std::string(listing.name) +
                                      " may hold only files, directories and symbolic links");
    }
  }
}

}  // namespace

std::string errno_text(int error) { return std::strerror(error); }

std::string in_quotes(std::string_view text, size_t max_shown) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < max_shown; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > max_shown) out += "...";
  out += '"';
  return out;
}

unique_fd open_beneath(int root_fd, const std::string& relative) {
  unique_fd dir;
  int current = root_fd;
  size_t start = 0;
  while (true) {
    size_t slash = relative.find('/', start);
    std::string component = relative.substr(start, slash == std::string::npos ? slash : slash - start);
    if (slash == std::string::npos) {
      // O_NONBLOCK: a file swapped for a FIFO meanwhile must not block the
      // open (callers check that what they opened is a regular file).
      return unique_fd(::openat(current, component.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    }
    unique_fd next(::openat(current, component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) return next;
    dir = std::move(next);
    current = dir.get();
    start = slash + 1;
  }
}

Result<std::vector<TreeEntry>> list_tree(int root_fd, const TreeListing& listing) {
  std::vector<TreeEntry> entries;
  Status listed = list_directory(root_fd, "", listing, entries);
  if (!listed) return listed;
  // std::string compares as unsigned bytes (char_traits<char>), the canonical order.
  std::sort(entries.begin(), entries.end(),
            [](const TreeEntry& a, const TreeEntry& b) { return a.path < b.path; });
  return entries;
}

}  // namespace coil::store
