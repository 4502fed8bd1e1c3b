#include "store/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <system_error>
#include <vector>

#include "common/unique_fd.h"
#include "store/file_tree.h"

namespace coil::store {
namespace {

// Longer paths or link targets than the kernel's PATH_MAX have no use in a
// code tree; refusing them also bounds the work spent per entry.
constexpr size_t kMaxPathBytes = 4095;
constexpr size_t kMaxIgnoreFileBytes = 1 << 20;

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

std::string join(const std::vector<std::string>& components, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) out += '/';
    out += components[i];
  }
  return out;
}

// The components of an archive entry name relative to the bundle root, with
// empty and "." components dropped ("./a//b/" is "a/b"). An empty result is
// the root itself. The error is the reason only; the caller names the entry.
Result<std::vector<std::string>> entry_components(std::string_view name) {
  if (name.empty()) return Status::error("has an empty name");
  if (name.size() > kMaxPathBytes) return Status::error("has a name longer than 4095 bytes");
  if (name.front() == '/') {
    return Status::error("is an absolute path; entries must be relative to the bundle");
  }
  std::vector<std::string> components;
  for (std::string_view part : split_path(name)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return Status::error("leaves the bundle (\"..\")");
    components.emplace_back(part);
  }
  return components;
}

// Every path of a bundle, as a tree, to answer "is this a duplicate", "does
// this path go through a symbolic link" and "can this link leave the
// bundle" in time proportional to the path, whatever the bundle's size.
class BundleTree {
 public:
  enum class Kind { kImpliedDirectory, kDirectory, kFile, kLink };

  // Records an entry. The error is the reason only (no entry name).
  Status add(const std::vector<std::string>& components, Kind kind) {
    Node* node = &root_;
    for (size_t i = 0; i + 1 < components.size(); ++i) {
      std::unique_ptr<Node>& child = node->children[components[i]];
      if (!child) {
        child = std::make_unique<Node>();
        child->kind = Kind::kImpliedDirectory;
      } else if (child->kind == Kind::kLink) {
        return Status::error("goes through the symbolic link " + in_quotes(join(components, i + 1)));
      } else if (child->kind == Kind::kFile) {
        return Status::error("goes through " + in_quotes(join(components, i + 1)) + ", which is a file");
      }
      node = child.get();
    }
    std::unique_ptr<Node>& last = node->children[components.back()];
    if (!last) {
      last = std::make_unique<Node>();
      last->kind = kind;
      return Status::ok();
    }
    if (last->kind == Kind::kImpliedDirectory && kind == Kind::kDirectory) {
      last->kind = kind;
      return Status::ok();
    }
    if (last->kind == Kind::kImpliedDirectory) {
      return Status::error("conflicts with the directory that earlier entries are in");
    }
    return Status::error("appears twice in the archive");
  }

  // Whether the symbolic link at `link` (already added) with `target` can
  // only resolve inside the bundle. Targets are resolved lexically from the
  // link's directory. Once the lexical walk has gone through another link,
  // the kernel's position no longer matches the lexical one (a link to "."
  // followed by ".." leaves the bundle), so ".." is refused from then on;
  // with that rule, every link stays inside by induction over the links it
  // goes through.
  Status check_link(const std::vector<std::string>& link, std::string_view target) const {
    if (target.empty()) return Status::error("is a symbolic link with an empty target");
    if (target.size() > kMaxPathBytes) {
      return Status::error("is a symbolic link with a target longer than 4095 bytes");
    }
    const std::string shown = "symbolic link to " + in_quotes(target);
    if (target.front() == '/') {
      return Status::error(shown + " is absolute; links must stay inside the bundle");
    }

    // nullptr stands for a path that no entry names (a dangling link is fine).
    std::vector<const Node*> stack{&root_};
    std::vector<std::string_view> lexical;
    auto step_into = [&](std::string_view name) {
      const Node* here = stack.back();
      const Node* next = nullptr;
      if (here != nullptr) {
        auto found = here->children.find(name);
        if (found != here->children.end()) next = found->second.get();
      }
      stack.push_back(next);
      lexical.push_back(name);
      return next;
    };
    for (size_t i = 0; i + 1 < link.size(); ++i) step_into(link[i]);

    std::string passed_link;  // the first link the lexical walk went through
    for (std::string_view part : split_path(target)) {
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        if (!passed_link.empty()) {
          return Status::error(shown + " uses \"..\" after going through the symbolic link " +
                               in_quotes(passed_link) + ", which could leave the bundle");
        }
        if (stack.size() == 1) return Status::error(shown + " leaves the bundle");
        stack.pop_back();
        lexical.pop_back();
        continue;
      }
      const Node* next = step_into(part);
      if (passed_link.empty() && next != nullptr && next->kind == Kind::kLink) {
        for (std::string_view name : lexical) {
          if (!passed_link.empty()) passed_link += '/';
          passed_link += name;
        }
      }
    }
    return Status::ok();
  }

 private:
  struct Node {
    Kind kind = Kind::kImpliedDirectory;
    std::map<std::string, std::unique_ptr<Node>, std::less<>> children;
  };
  Node root_;
};

struct LinkRecord {
  std::string name;  // as the user knows it, for messages
  std::vector<std::string> components;
  std::string target;
};

// ----------------------------------------------------------------------------
// Unpacking

struct ArchiveReadDeleter {
  void operator()(archive* reader) const { archive_read_free(reader); }
};

// libarchive's explanation as " (...)", or nothing when it has none.
std::string archive_detail(archive* handle) {
  const char* text = archive_error_string(handle);
  return text != nullptr && *text != '\0' ? std::string(" (") + text + ")" : std::string();
}

constexpr char kNotAnArchive[] = "bundle: not a tar or tar.gz archive, or damaged or truncated";

const char* refused_type(mode_t type) {
  switch (type) {
    case AE_IFCHR:
      return "a character device";
    case AE_IFBLK:
      return "a block device";
    case AE_IFIFO:
      return "a FIFO";
    case AE_IFSOCK:
      return "a socket";
    default:
      return "of an unknown file type";
  }
}

Status write_all(int fd, const char* data, size_t size, int64_t offset) {
  while (size > 0) {
    ssize_t written = ::pwrite(fd, data, size, offset);
    if (written < 0) {
      if (errno == EINTR) continue;
      return Status::error("cannot write: " + errno_text(errno));
    }
    data += written;
    size -= static_cast<size_t>(written);
    offset += written;
  }
  return Status::ok();
}

// Writes the entries of one archive under an open destination directory. No
// path is ever resolved by the kernel as a whole: every component is opened
// with O_NOFOLLOW from its parent's fd, so a symbolic link written by an
// earlier entry is never followed, whatever the bookkeeping above missed.
class Extractor {
 public:
  Extractor(archive* reader, int root_fd, const BundleLimits& limits)
      : reader_(reader), root_fd_(root_fd), limits_(limits) {}

  Result<UnpackedBundle> run() {
    archive_entry* entry = nullptr;
    uint64_t entries = 0;
    int64_t entry_end = 0;  // stream offset where the last entry ended
    std::string previous;   // the last entry read, to place a damaged archive
    while (true) {
      int status = archive_read_next_header(reader_, &entry);
      if (status == ARCHIVE_EOF) break;
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
        if (previous.empty()) {
          return Status::error(kNotAnArchive + archive_detail(reader_));
        }
        return Status::error("bundle: the archive is damaged or truncated after entry " +
                             in_quotes(previous) + archive_detail(reader_));
      }
      const char* raw_name = archive_entry_pathname(entry);
      if (raw_name == nullptr) raw_name = archive_entry_pathname_utf8(entry);
      if (raw_name == nullptr) {
        return Status::error("bundle: an entry after " +
                             (previous.empty() ? "the start" : in_quotes(previous)) +
                             " has a name that cannot be read");
      }
      previous = raw_name;
      if (++entries > limits_.max_entries) {
        return refuse(previous, "the bundle has more than " + std::to_string(limits_.max_entries) +
                                    " entries, the limit");
      }
      Status extracted = extract(entry, previous);
      if (!extracted) return extracted;
      // Past this entry's data and padding, so that the end-of-archive check
      // below knows where the entry ended in the (decompressed) stream.
      if (archive_read_data_skip(reader_) != ARCHIVE_OK) {
        return refuse(previous, "the archive is damaged or truncated" + archive_detail(reader_));
      }
      entry_end = archive_filter_bytes(reader_, 0);
    }
    // libarchive accepts a tar that stops at an entry boundary without the
    // end-of-archive marker (a block of zeros), which is what a cut-off
    // upload of an uncompressed tar looks like: entries would be lost silently.
    if (archive_filter_bytes(reader_, 0) < entry_end + 512) {
      return Status::error("bundle: the archive ends without tar's end-of-archive marker" +
                           (previous.empty() ? std::string() : " after entry " + in_quotes(previous)) +
                           ": it was cut short (upload it again)");
    }
    // Links are checked again once every path is known: a link can go
    // through another link that comes later in the archive.
    for (const LinkRecord& link : links_) {
      Status inside = tree_.check_link(link.components, link.target);
      if (!inside) return refuse(link.name, inside.message());
    }
    return result_;
  }

 private:
  Status refuse(const std::string& name, const std::string& reason) const {
    return Status::error("bundle: entry " + in_quotes(name) + ": " + reason);
  }

  Status extract(archive_entry* entry, const std::string& name) {
    Result<std::vector<std::string>> components = entry_components(name);
    if (!components) return refuse(name, components.message());
    const char* hardlink = archive_entry_hardlink(entry);
    if (hardlink == nullptr) hardlink = archive_entry_hardlink_utf8(entry);
    if (hardlink != nullptr) {
      return refuse(name,
                    "is a hard link (to " + in_quotes(hardlink) + "); bundles may not contain hard links");
    }
    mode_t type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
      return refuse(name, std::string("is ") + refused_type(type) +
                              "; bundles may hold only files, directories and symbolic links");
    }
    if (components->empty()) {
      // "./" or "." names the bundle root itself, which tar writes first
      // when run as `tar -C dir .`: nothing to create.
      if (type == AE_IFDIR) return Status::ok();
      return refuse(name, "names the bundle root, which can only be a directory");
    }

    BundleTree::Kind kind = type == AE_IFDIR   ? BundleTree::Kind::kDirectory
                            : type == AE_IFREG ? BundleTree::Kind::kFile
                                               : BundleTree::Kind::kLink;
    std::string target;
    if (kind == BundleTree::Kind::kLink) {
      const char* raw_target = archive_entry_symlink(entry);
      if (raw_target == nullptr) raw_target = archive_entry_symlink_utf8(entry);
      target = raw_target != nullptr ? raw_target : "";
    }
    Status added = tree_.add(*components, kind);
    if (!added) return refuse(name, added.message());

    Status made;
    switch (kind) {
      case BundleTree::Kind::kLink: {
        Status inside = tree_.check_link(*components, target);
        if (!inside) return refuse(name, inside.message());
        made = make_link(*components, target);
        links_.push_back({name, std::move(components.value()), std::move(target)});
        break;
      }
      case BundleTree::Kind::kFile:
        made = write_file(entry, *components);
        break;
      default:
        made = open_directories(*components, components->size()).status();
    }
    if (!made) return refuse(name, made.message());
    return Status::ok();
  }

  // Opens (creating as needed) the first `count` components as directories.
  Result<unique_fd> open_directories(const std::vector<std::string>& components, size_t count) {
    unique_fd current(::fcntl(root_fd_, F_DUPFD_CLOEXEC, 0));
    if (!current) return Status::error("cannot open the destination: " + errno_text(errno));
    for (size_t i = 0; i < count; ++i) {
      const char* part = components[i].c_str();
      bool created = ::mkdirat(current.get(), part, 0755) == 0;
      if (!created && errno != EEXIST) {
        return Status::error("cannot create directory " + in_quotes(join(components, i + 1)) + ": " +
                             errno_text(errno));
      }
      unique_fd next(::openat(current.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) {
        if (errno == ELOOP || errno == ENOTDIR) {
          return Status::error("goes through " + in_quotes(join(components, i + 1)) +
                               ", which is not a directory");
        }
        return Status::error("cannot open directory " + in_quotes(join(components, i + 1)) + ": " +
                             errno_text(errno));
      }
      // mkdirat's mode is cut by the umask; the contract is 0755.
      if (created && ::fchmod(next.get(), 0755) != 0) {
        return Status::error("cannot set the mode of " + in_quotes(join(components, i + 1)) + ": " +
                             errno_text(errno));
      }
      current = std::move(next);
    }
    return current;
  }

  Status make_link(const std::vector<std::string>& components, const std::string& target) {
    Result<unique_fd> parent = open_directories(components, components.size() - 1);
    if (!parent) return parent.status();
    if (::symlinkat(target.c_str(), parent->get(), components.back().c_str()) != 0) {
      return Status::error("cannot create the symbolic link: " + errno_text(errno));
    }
    return Status::ok();
  }

  Status write_file(archive_entry* entry, const std::vector<std::string>& components) {
    int64_t declared = archive_entry_size(entry);
    if (declared < 0) return Status::error("has a negative size");
    auto size = static_cast<uint64_t>(declared);
    // Checked before writing, so a bomb never reaches the disk.
    if (size > limits_.max_expanded_bytes || result_.bytes + size > limits_.max_expanded_bytes) {
      return Status::error("the bundle expands to more than " + std::to_string(limits_.max_expanded_bytes) +
                           " bytes, the limit");
    }
    mode_t mode = (archive_entry_perm(entry) & S_IXUSR) ? 0755 : 0644;

    Result<unique_fd> parent = open_directories(components, components.size() - 1);
    if (!parent) return parent.status();
    unique_fd file(::openat(parent->get(), components.back().c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!file) return Status::error("cannot create the file: " + errno_text(errno));
    if (::fchmod(file.get(), mode) != 0) return Status::error("cannot set the mode: " + errno_text(errno));

    while (true) {
      const void* block = nullptr;
      size_t length = 0;
      la_int64_t offset = 0;
      int status = archive_read_data_block(reader_, &block, &length, &offset);
      if (status == ARCHIVE_EOF) break;
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
        return Status::error("the archive is damaged or truncated" + archive_detail(reader_));
      }
      if (offset < 0 || static_cast<uint64_t>(offset) > size ||
          length > size - static_cast<uint64_t>(offset)) {
        return Status::error("holds more data than its size in the archive says");
      }
      Status written = write_all(file.get(), static_cast<const char*>(block), length, offset);
      if (!written) return written;
    }
    // A sparse file may end in a hole that no data block covers.
    if (::ftruncate(file.get(), static_cast<off_t>(size)) != 0) {
      return Status::error("cannot set the size: " + errno_text(errno));
    }
    result_.files += 1;
    result_.bytes += size;
    return Status::ok();
  }

  archive* reader_;
  int root_fd_;
  const BundleLimits& limits_;
  BundleTree tree_;
  std::vector<LinkRecord> links_;
  UnpackedBundle result_;
};

// ----------------------------------------------------------------------------
// Packing

BundleTree::Kind bundle_kind(EntryKind kind) {
  return kind == EntryKind::kDirectory ? BundleTree::Kind::kDirectory
         : kind == EntryKind::kFile    ? BundleTree::Kind::kFile
                                       : BundleTree::Kind::kLink;
}

class Packer {
 public:
  explicit Packer(const std::string& directory) : directory_(directory) {}

  Result<std::string> run() {
    unique_fd root(::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) {
      return Status::error("pack: " + in_quotes(directory_) +
                           ": cannot open directory: " + errno_text(errno));
    }
    Status loaded = load_ignore_file(root.get());
    if (!loaded) return loaded;

    TreeListing listing;
    listing.name = "a bundle";
    listing.refuse = [this](const std::string& path, const std::string& reason) {
      return refuse(path, reason);
    };
    listing.skip = [this](const std::string& path, bool is_directory) {
      return rules_.ignored(path, is_directory);
    };
    listing.max_path_bytes = kMaxPathBytes;
    Result<std::vector<TreeEntry>> listed = list_tree(root.get(), listing);
    if (!listed) return listed.status();
    const std::vector<TreeEntry>& entries = *listed;

    BundleTree tree;
    for (const TreeEntry& entry : entries) {
      Result<std::vector<std::string>> components = entry_components(entry.path);
      if (!components) return refuse(entry.path, components.message());
      Status added = tree.add(*components, bundle_kind(entry.kind));
      if (!added) return refuse(entry.path, added.message());
    }
    for (const TreeEntry& entry : entries) {
      if (entry.kind != EntryKind::kLink) continue;
      Result<std::vector<std::string>> components = entry_components(entry.path);
      Status inside = tree.check_link(*components, entry.link_target);
      if (!inside) return refuse(entry.path, inside.message());
    }
    return write_archive(root.get(), entries);
  }

 private:
  Status refuse(const std::string& path, const std::string& reason) const {
    std::string shown = directory_;
    if (!path.empty()) shown += (shown.empty() || shown.back() != '/' ? "/" : "") + path;
    return Status::error("pack: " + in_quotes(shown) + ": " + reason);
  }

  Status load_ignore_file(int root_fd) {
    unique_fd file(::openat(root_fd, ".coilignore", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!file) {
      if (errno == ENOENT) return Status::ok();
      if (errno == ELOOP) return refuse(".coilignore", "is a symbolic link; it must be a regular file");
      return refuse(".coilignore", "cannot open: " + errno_text(errno));
    }
    struct stat info {};
    if (::fstat(file.get(), &info) != 0) return refuse(".coilignore", "cannot stat: " + errno_text(errno));
    if (!S_ISREG(info.st_mode)) return refuse(".coilignore", "must be a regular file");
    if (static_cast<uint64_t>(info.st_size) > kMaxIgnoreFileBytes) {
      return refuse(".coilignore", "is larger than 1 MiB");
    }
    std::string text;
    char buffer[4096];
    while (true) {
      ssize_t got = ::read(file.get(), buffer, sizeof buffer);
      if (got < 0) {
        if (errno == EINTR) continue;
        return refuse(".coilignore", "cannot read: " + errno_text(errno));
      }
      if (got == 0) break;
      text.append(buffer, static_cast<size_t>(got));
      if (text.size() > kMaxIgnoreFileBytes) return refuse(".coilignore", "is larger than 1 MiB");
    }
    rules_ = IgnoreRules::parse(text);
    return Status::ok();
  }

  static la_ssize_t append_output(archive*, void* client, const void* buffer, size_t length) {
    // An exception must not unwind through libarchive's C frames.
    try {
      static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
    } catch (const std::bad_alloc&) {
      return -1;
    }
    return static_cast<la_ssize_t>(length);
  }

  Result<std::string> write_archive(int root_fd, const std::vector<TreeEntry>& entries) {
    std::string output;
    std::unique_ptr<archive, int (*)(archive*)> writer(archive_write_new(), archive_write_free);
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> header(archive_entry_new(), archive_entry_free);
    if (!writer || !header) return Status::error("pack: out of memory");
    auto failed = [&](const std::string& what) {
      return Status::error("pack: " + in_quotes(directory_) + ": " + what + archive_detail(writer.get()));
    };
    if (archive_write_add_filter_gzip(writer.get()) != ARCHIVE_OK) return failed("cannot set up gzip");
    // gzip's header carries the time of packing unless told not to; the same
    // tree must pack to the same bytes.
    if (archive_write_set_filter_option(writer.get(), "gzip", "timestamp", nullptr) != ARCHIVE_OK) {
      return failed("cannot leave the time out of the gzip header");
    }
    if (archive_write_set_format_pax_restricted(writer.get()) != ARCHIVE_OK) {
      return failed("cannot set up tar");
    }
    // No zero padding after the gzip stream to fill a tape block.
    if (archive_write_set_bytes_in_last_block(writer.get(), 1) != ARCHIVE_OK) {
      return failed("cannot set up tar");
    }
    if (archive_write_open2(writer.get(), &output, nullptr, append_output, nullptr, nullptr) != ARCHIVE_OK) {
      return failed("cannot start the archive");
    }

    std::vector<char> buffer(1 << 16);
    for (const TreeEntry& entry : entries) {
      archive_entry* e = header.get();
      archive_entry_clear(e);
      archive_entry_set_pathname(e, entry.path.c_str());
      archive_entry_set_mtime(e, 0, 0);
      archive_entry_set_uid(e, 0);
      archive_entry_set_gid(e, 0);
      unique_fd file;
      uint64_t size = 0;
      switch (entry.kind) {
        case EntryKind::kLink:
          archive_entry_set_filetype(e, AE_IFLNK);
          archive_entry_set_perm(e, 0777);
          archive_entry_set_symlink(e, entry.link_target.c_str());
          break;
        case EntryKind::kFile: {
          file = open_beneath(root_fd, entry.path);
          if (!file) return refuse(entry.path, "cannot open: " + errno_text(errno));
          struct stat info {};
          if (::fstat(file.get(), &info) != 0) return refuse(entry.path, "cannot stat: " + errno_text(errno));
          if (!S_ISREG(info.st_mode)) return refuse(entry.path, "changed while being packed");
          size = static_cast<uint64_t>(info.st_size);
          archive_entry_set_filetype(e, AE_IFREG);
          archive_entry_set_perm(e, (info.st_mode & S_IXUSR) ? 0755 : 0644);
          archive_entry_set_size(e, static_cast<la_int64_t>(size));
          break;
        }
        case EntryKind::kDirectory:
          archive_entry_set_filetype(e, AE_IFDIR);
          archive_entry_set_perm(e, 0755);
      }
      int status = archive_write_header(writer.get(), e);
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
        return failed("cannot add " + in_quotes(entry.path));
      }
      uint64_t remaining = size;
      while (remaining > 0) {
        ssize_t got = ::read(file.get(), buffer.data(), std::min<uint64_t>(buffer.size(), remaining));
        if (got < 0) {
          if (errno == EINTR) continue;
          return refuse(entry.path, "cannot read: " + errno_text(errno));
        }
        if (got == 0) return refuse(entry.path, "changed while being packed (it got shorter)");
        if (archive_write_data(writer.get(), buffer.data(), static_cast<size_t>(got)) != got) {
          return failed("cannot add " + in_quotes(entry.path));
        }
        remaining -= static_cast<uint64_t>(got);
      }
    }
    if (archive_write_close(writer.get()) != ARCHIVE_OK) return failed("cannot finish the archive");
    return output;
  }

  std::string directory_;
  IgnoreRules rules_;
};

bool rule_matches(std::string_view pattern, const std::string& subject) {
  return ::fnmatch(std::string(pattern).c_str(), subject.c_str(), FNM_PATHNAME) == 0;
}

}  // namespace

Result<UnpackedBundle> unpack_bundle(std::string_view archive_bytes, const std::string& destination,
                                     const BundleLimits& limits) {
  if (archive_bytes.size() > limits.max_archive_bytes) {
    return Status::error("bundle: the archive is " + std::to_string(archive_bytes.size()) +
                         " bytes, more than the limit of " + std::to_string(limits.max_archive_bytes) +
                         " bytes");
  }
  if (destination.empty()) return Status::error("bundle: no destination directory given");

  std::error_code error;
  std::filesystem::path target(destination);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), error);
  if (error) {
    return Status::error("bundle: cannot create " + in_quotes(target.parent_path().string()) + ": " +
                         error.message());
  }
  // mkdir is the existence check: it fails if something is there, and what
  // is there is not ours to remove.
  if (::mkdir(destination.c_str(), 0755) != 0) {
    return Status::error("bundle: cannot create " + in_quotes(destination) + ": " + errno_text(errno));
  }

  Result<UnpackedBundle> result = [&]() -> Result<UnpackedBundle> {
    unique_fd root(::open(destination.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) {
      return Status::error("bundle: cannot open " + in_quotes(destination) + ": " + errno_text(errno));
    }
    if (::fchmod(root.get(), 0755) != 0) {
      return Status::error("bundle: cannot set the mode of " + in_quotes(destination) + ": " +
                           errno_text(errno));
    }
    std::unique_ptr<archive, ArchiveReadDeleter> reader(archive_read_new());
    if (!reader) return Status::error("bundle: out of memory");
    archive_read_support_filter_gzip(reader.get());
    archive_read_support_filter_none(reader.get());
    archive_read_support_format_tar(reader.get());
    if (archive_read_open_memory(reader.get(), archive_bytes.data(), archive_bytes.size()) != ARCHIVE_OK) {
      return Status::error(kNotAnArchive + archive_detail(reader.get()));
    }
    return Extractor(reader.get(), root.get(), limits).run();
  }();

  if (!result) std::filesystem::remove_all(target, error);  // best effort: the error to report is the first
  return result;
}

IgnoreRules IgnoreRules::parse(std::string_view text) {
  IgnoreRules rules;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // As in gitignore, trailing blanks are not part of a pattern unless escaped ("a\ ").
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t') &&
           !(line.size() >= 2 && line[line.size() - 2] == '\\')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line.front() == '#') continue;
    Rule rule;
    if (line.front() == '!') {
      rule.negate = true;
      line.remove_prefix(1);
    }
    while (!line.empty() && line.back() == '/') {
      rule.directory_only = true;
      line.remove_suffix(1);
    }
    if (line.find('/') != std::string_view::npos) {
      rule.anchored = true;
      while (!line.empty() && line.front() == '/') line.remove_prefix(1);
    }
    if (line.empty()) continue;  // "/" or "!" alone names nothing
    rule.pattern = std::string(line);
    rules.rules_.push_back(std::move(rule));
  }
  return rules;
}

bool IgnoreRules::ignored(std::string_view relative_path, bool is_directory) const {
  auto ignored_itself = [this](std::string_view path, bool directory) {
    size_t slash = path.rfind('/');
    std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
    if (directory && (name == ".git" || name == "__pycache__")) return true;
    bool ignored = false;
    for (const Rule& rule : rules_) {
      if (rule.directory_only && !directory) continue;
      if (rule_matches(rule.pattern, std::string(rule.anchored ? path : name))) ignored = !rule.negate;
    }
    return ignored;
  };
  // Like git, an ignored directory is not entered, so nothing inside it can
  // be re-included: a path is ignored when any directory above it is.
  for (size_t slash = relative_path.find('/'); slash != std::string_view::npos;
       slash = relative_path.find('/', slash + 1)) {
    if (ignored_itself(relative_path.substr(0, slash), true)) return true;
  }
  return ignored_itself(relative_path, is_directory);
}

Result<std::string> pack_directory(const std::string& directory) { return Packer(directory).run(); }

}  // namespace coil::store
