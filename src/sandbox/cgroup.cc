#include "sandbox/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <set>
#include <string_view>
#include <system_error>

namespace coil::sandbox {
namespace {

constexpr const char* kControllers[] = {"memory", "pids", "cpu"};
constexpr auto kFirstRetryDelay = std::chrono::milliseconds(10);
constexpr auto kMaxRetryDelay = std::chrono::milliseconds(1000);
// How long create() and the destructor wait for SIGKILLed processes to leave
// a group before its rmdir stops failing with EBUSY.
constexpr auto kRemoveWait = std::chrono::seconds(1);

std::string error_text(int err) { return std::strerror(err); }

std::string join(std::string_view base, std::string_view rel) {
  std::string out(base);
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  while (!rel.empty() && rel.front() == '/') rel.remove_prefix(1);
  if (rel.empty()) return out;
  if (out.empty() || out.back() != '/') out += '/';
  out += rel;
  return out;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Returns 0 or the errno of the failure.
int read_text(const std::string& path, std::string& out) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno;
  out.clear();
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return 0;
    out.append(buffer, static_cast<size_t>(n));
  }
}

// Writes `text` in one write(), as cgroupfs takes a value per write. `create`
// is for fake trees, where mkdir makes no control files; on cgroupfs a missing
// file must stay an error (ENOENT), and O_CREAT would turn it into EACCES.
int write_text(const std::string& path, std::string_view text, bool create) {
  int flags = O_WRONLY | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0);
  unique_fd fd(::open(path.c_str(), flags, 0644));
  if (!fd) return errno;
  ssize_t n;
  do {
    n = ::write(fd.get(), text.data(), text.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  return static_cast<size_t>(n) == text.size() ? 0 : EIO;
}

Status write_value(const std::string& path, std::string_view text, bool create) {
  if (int err = write_text(path, text, create); err != 0) {
    return Status::error("cgroup: cannot write \"" + std::string(text) + "\" to " + path + ": " +
                         error_text(err));
  }
  return Status::ok();
}

std::vector<std::string_view> split(std::string_view text, std::string_view separators) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t end = text.find_first_of(separators, i);
    if (end == std::string_view::npos) end = text.size();
    if (end > i) out.push_back(text.substr(i, end - i));
    i = end + 1;
  }
  return out;
}

// A positive decimal that fits `max`, or 0.
uint64_t parse_positive(std::string_view text, uint64_t max) {
  if (text.empty() || text.size() > 19) return 0;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return 0;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value <= max ? value : 0;
}

// The value of `key` in a flat-keyed file ("oom_kill 3\n..."), 0 if absent.
uint64_t keyed_value(const std::string& text, std::string_view key) {
  for (std::string_view line : split(text, "\n")) {
    std::vector<std::string_view> fields = split(line, " ");
    if (fields.size() == 2 && fields[0] == key) return parse_positive(fields[1], UINT64_MAX);
  }
  return 0;
}

std::vector<pid_t> listed_pids(const std::string& dir) {
  std::string text;
  if (read_text(join(dir, "cgroup.procs"), text) != 0) return {};
  std::vector<pid_t> pids;
  // Only plain positive numbers: kill(0) or kill(-1) would hit far more than
  // this group, whatever a (fake or damaged) file says.
  for (std::string_view line : split(text, "\n")) {
    if (uint64_t pid = parse_positive(line, INT_MAX)) pids.push_back(static_cast<pid_t>(pid));
  }
  return pids;
}

// SIGKILLs the processes listed in dir/cgroup.procs, except coil itself (on
// v2 the host may live in <name>/host).
void kill_listed(const std::string& dir) {
  for (pid_t pid : listed_pids(dir)) {
    if (pid != ::getpid()) ::kill(pid, SIGKILL);
  }
}

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};

// The names of the entries of `dir` that are (or are not) directories;
// symbolic links are never directories here, so removal never follows one.
std::vector<std::string> entries(const std::string& dir, bool directories) {
  std::vector<std::string> out;
  std::unique_ptr<DIR, DirCloser> handle(::opendir(dir.c_str()));
  if (!handle) return out;
  while (dirent* entry = ::readdir(handle.get())) {
    std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    bool is_dir = entry->d_type == DT_DIR;
    if (entry->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_dir = ::fstatat(::dirfd(handle.get()), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
               S_ISDIR(st.st_mode);
    }
    if (is_dir == directories) out.emplace_back(name);
  }
  return out;
}

// Removes the group `dir` and every group below it, leaf first, after
// SIGKILLing the processes listed in each. Returns 0 once it is gone (or was
// never there), else the errno of the rmdir that failed: EBUSY while killed
// processes are still exiting.
int remove_tree(const std::string& dir, bool fake_tree) {
  int result = 0;
  for (const std::string& child : entries(dir, true)) {
    int err = remove_tree(join(dir, child), fake_tree);
    if (result == 0) result = err;
  }
  kill_listed(dir);
  if (result != 0) return result;
  if (fake_tree) {
    for (const std::string& file : entries(dir, false)) ::unlink(join(dir, file).c_str());
  }
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return 0;
  return errno;
}

// remove_tree(), retried while the kernel reports EBUSY, up to `timeout`.
// There is no event for "the last process left the group", so this polls.
int remove_tree_waiting(const std::string& dir, bool fake_tree, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    int err = remove_tree(dir, fake_tree);
    if (err != EBUSY || std::chrono::steady_clock::now() >= deadline) return err;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

// A group named coil-<pid> whose process no longer exists.
bool is_stale(const std::string& name) {
  constexpr std::string_view kPrefix = "coil-";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  uint64_t pid = parse_positive(std::string_view(name).substr(kPrefix.size()), INT_MAX);
  if (pid == 0 || static_cast<pid_t>(pid) == ::getpid()) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

struct SelfLine {
  bool unified = false;  // the "0::<path>" line of cgroup v2
  int hierarchy = 0;
  std::vector<std::string> controllers;
  std::string path;
};

// /proc/self/cgroup: "hierarchy-ID:controller-list:path" per line.
std::vector<SelfLine> parse_self(const std::string& text) {
  std::vector<SelfLine> lines;
  for (std::string_view line : split(text, "\n")) {
    size_t first = line.find(':');
    if (first == std::string_view::npos) continue;
    size_t second = line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    SelfLine parsed;
    std::string_view id = line.substr(0, first);
    std::string_view controllers = line.substr(first + 1, second - first - 1);
    parsed.path = std::string(line.substr(second + 1));
    if (id == "0" && controllers.empty()) {
      parsed.unified = true;
    } else {
      parsed.hierarchy = static_cast<int>(parse_positive(id, INT_MAX));
      for (std::string_view c : split(controllers, ",")) parsed.controllers.emplace_back(c);
    }
    lines.push_back(std::move(parsed));
  }
  return lines;
}

std::string joined(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

}  // namespace

// ---- InstanceCgroup ----

Result<std::vector<unique_fd>> InstanceCgroup::open_procs() const {
  std::vector<unique_fd> fds;
  for (const std::string& dir : paths_) {
    std::string path = join(dir, "cgroup.procs");
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | (fake_tree_ ? O_CREAT : 0), 0644));
    if (!fd) return Status::error("cgroup: cannot open " + path + ": " + error_text(errno));
    fds.push_back(std::move(fd));
  }
  return fds;
}

bool InstanceCgroup::oom_killed() const {
  const char* file = version_ == CgroupVersion::kV1 ? "memory.oom_control" : "memory.events";
  std::string text;
  if (paths_.empty() || read_text(join(paths_[0], file), text) != 0) return false;
  return keyed_value(text, "oom_kill") > 0;
}

void InstanceCgroup::kill_all() const {
  if (version_ == CgroupVersion::kV2 && !paths_.empty()) {
    std::string kill_file = join(paths_[0], "cgroup.kill");
    if (exists(kill_file) && write_text(kill_file, "1", false) == 0) return;
  }
  // Without cgroup.kill, a process may fork between our read and our kill;
  // its child shows up in the next read. A killed process stays listed until
  // it has exited, so "nothing new" is the end. pids.max bounds the rounds a
  // fork loop could need; the cap bounds them regardless.
  std::set<pid_t> signalled;
  for (int round = 0; round < 64; ++round) {
    bool fresh = false;
    for (const std::string& dir : paths_) {
      for (pid_t pid : listed_pids(dir)) {
        if (pid == ::getpid() || !signalled.insert(pid).second) continue;
        ::kill(pid, SIGKILL);
        fresh = true;
      }
    }
    if (!fresh) return;
  }
}

// ---- CgroupManager: creation ----

CgroupManager::CgroupManager(const CgroupLayout& layout, size_t pool_size)
    : layout_(layout),
      base_target_(pool_size),
      pool_target_(pool_size),
      name_(layout.name.empty() ? "coil-" + std::to_string(::getpid()) : layout.name),
      retry_delay_(kFirstRetryDelay) {}

Result<std::unique_ptr<CgroupManager>> CgroupManager::create(const CgroupLayout& layout, size_t pool_size) {
  std::string self_text;
  if (int err = read_text(layout.self_cgroup, self_text); err != 0) {
    return Status::error("cgroup: cannot read " + layout.self_cgroup + ": " + error_text(err));
  }
  std::unique_ptr<CgroupManager> manager(new CgroupManager(layout, pool_size));
  if (manager->name_.empty() || manager->name_.find('/') != std::string::npos || manager->name_ == "." ||
      manager->name_ == "..") {
    return Status::error("cgroup: invalid group name \"" + manager->name_ + "\"");
  }

  Status v1 = manager->detect_v1(self_text);
  if (!v1) {
    manager->hierarchies_.clear();
    std::vector<SelfLine> lines = parse_self(self_text);
    bool has_unified = std::any_of(lines.begin(), lines.end(), [](const SelfLine& l) { return l.unified; });
    bool has_v1 = std::any_of(lines.begin(), lines.end(), [](const SelfLine& l) {
      return !l.unified && std::any_of(l.controllers.begin(), l.controllers.end(),
                                       [](const std::string& c) { return c.rfind("name=", 0) != 0; });
    });
    if (!has_unified) return v1;
    Status v2 = manager->detect_v2(self_text);
    if (!v2) return has_v1 ? Status::error(v1.message() + "; " + v2.message()) : v2;
    manager->version_ = CgroupVersion::kV2;
  }
  if (Status s = manager->check_filesystems(); !s) return s;
  if (Status s = manager->clean_and_create_groups(); !s) return s;
  manager->describe_hierarchies();

  // Filled here, not by the background thread, which does not exist yet (see
  // the class comment); a group that cannot be made now will not be made at
  // the first request either, and this error names it at start.
  for (size_t i = 0; i < pool_size; ++i) {
    Result<std::unique_ptr<InstanceCgroup>> group = manager->make_group(manager->next_index_++);
    if (!group) return group.status();
    manager->ready_.push_back(std::move(*group));
  }
  return manager;
}

Status CgroupManager::detect_v1(const std::string& self_text) {
  std::vector<SelfLine> lines = parse_self(self_text);
  for (const char* controller : kControllers) {
    auto line = std::find_if(lines.begin(), lines.end(), [&](const SelfLine& l) {
      return !l.unified &&
             std::find(l.controllers.begin(), l.controllers.end(), controller) != l.controllers.end();
    });
    if (line == lines.end()) {
      return Status::error(std::string("cgroup v1: no ") + controller + " controller in " +
                           layout_.self_cgroup);
    }
    std::string mount = join(layout_.fs_root, controller);
    if (!is_directory(mount)) {
      return Status::error("cgroup v1: " + mount + " does not exist (the " + controller +
                           " hierarchy is not mounted there)");
    }
    // Controllers mounted together (cpu,cpuacct; or memory with pids) are one
    // hierarchy: one directory serves them all.
    auto same = std::find_if(hierarchies_.begin(), hierarchies_.end(), [&](const Hierarchy& h) {
      return h.self_path == line->path && std::find(line->controllers.begin(), line->controllers.end(),
                                                    h.controllers.front()) != line->controllers.end();
    });
    if (same != hierarchies_.end()) {
      same->controllers.emplace_back(controller);
      continue;
    }
    Hierarchy h;
    h.controllers.emplace_back(controller);
    h.self_path = line->path;
    h.base = join(mount, line->path);
    h.group = join(h.base, name_);
    if (!is_directory(h.base)) {
      return Status::error("cgroup v1: " + h.base + " does not exist (coil's " + controller +
                           " cgroup, from " + layout_.self_cgroup + ")");
    }
    hierarchies_.push_back(std::move(h));
  }
  return Status::ok();
}

Status CgroupManager::detect_v2(const std::string& self_text) {
  std::vector<SelfLine> lines = parse_self(self_text);
  auto line = std::find_if(lines.begin(), lines.end(), [](const SelfLine& l) { return l.unified; });
  Hierarchy h;
  h.self_path = line->path;
  h.base = join(layout_.fs_root, line->path);
  h.group = join(h.base, name_);
  std::string file = join(h.base, "cgroup.controllers");
  std::string text;
  if (int err = read_text(file, text); err != 0) {
    return Status::error("cgroup v2: cannot read " + file + ": " + error_text(err));
  }
  std::vector<std::string_view> available = split(text, " \n");
  for (const char* controller : kControllers) {
    if (std::find(available.begin(), available.end(), controller) == available.end()) {
      return Status::error(std::string("cgroup v2: no ") + controller + " controller in " + file);
    }
    h.controllers.emplace_back(controller);
  }
  hierarchies_.push_back(std::move(h));
  return Status::ok();
}

Status CgroupManager::check_filesystems() {
  const bool v1 = version_ == CgroupVersion::kV1;
  for (const Hierarchy& h : hierarchies_) {
    struct statfs fs {};
    if (::statfs(h.base.c_str(), &fs) != 0) {
      return Status::error("cgroup: cannot statfs " + h.base + ": " + error_text(errno));
    }
    if (static_cast<unsigned long>(fs.f_type) == (v1 ? CGROUP_SUPER_MAGIC : CGROUP2_SUPER_MAGIC)) continue;
    if (!layout_.fake_tree) {
      return Status::error(std::string(v1 ? "cgroup v1: " : "cgroup v2: ") + h.base + " is not a cgroup" +
                           (v1 ? "" : "2") + " filesystem");
    }
    fake_tree_ = true;
  }
  return Status::ok();
}

Status CgroupManager::clean_and_create_groups() {
  for (const Hierarchy& h : hierarchies_) {
    for (const std::string& child : entries(h.base, true)) {
      std::string path = join(h.base, child);
      if (child == name_) {
        if (int err = remove_tree_waiting(path, fake_tree_, kRemoveWait); err != 0) {
          return Status::error("cgroup: cannot remove " + path +
                               ", left by an earlier run: " + error_text(err));
        }
      } else if (is_stale(child)) {
        // Still busy: its processes were just killed. The background thread
        // retries; a stale group must not delay the start.
        if (remove_tree(path, fake_tree_) == EBUSY) doomed_.push_back(path);
      }
    }
    if (::mkdir(h.group.c_str(), 0755) != 0) {
      return Status::error("cgroup: cannot create " + h.group + ": " + error_text(errno));
    }
    ++groups_made_;
  }
  if (version_ == CgroupVersion::kV2) return enable_v2_controllers();
  return Status::ok();
}

Status CgroupManager::enable_v2_controllers() {
  const Hierarchy& h = hierarchies_.front();
  std::string parent_control = join(h.base, "cgroup.subtree_control");
  std::string text;
  // A fake tree may have no such file: nothing enabled yet.
  if (int err = read_text(parent_control, text); err != 0 && !(fake_tree_ && err == ENOENT)) {
    return Status::error("cgroup v2: cannot read " + parent_control + ": " + error_text(err));
  }
  std::vector<std::string_view> enabled = split(text, " \n");
  std::vector<std::string> missing;
  for (const char* controller : kControllers) {
    if (std::find(enabled.begin(), enabled.end(), controller) == enabled.end()) {
      missing.push_back(std::string("+") + controller);
    }
  }
  if (!missing.empty()) {
    std::string request = joined(missing, " ");
    int err = write_text(parent_control, request, fake_tree_);
    if (err == EBUSY) {
      // "No internal processes": coil itself lives in its cgroup. Move the
      // host into a leaf of its own group, then ask again.
      host_leaf_ = join(h.group, "host");
      if (::mkdir(host_leaf_.c_str(), 0755) != 0) {
        return Status::error("cgroup v2: cannot create " + host_leaf_ + ": " + error_text(errno));
      }
      if (Status s = write_value(join(host_leaf_, "cgroup.procs"), "0", fake_tree_); !s) return s;
      err = write_text(parent_control, request, fake_tree_);
      if (err == EBUSY) {
        return Status::error("cgroup v2: cannot enable " + request + " in " + parent_control +
                             ": processes other than coil live in " + h.base +
                             " (cgroup v2 enables controllers only for a group without processes); "
                             "run coil in a cgroup of its own");
      }
    }
    if (err != 0) {
      return Status::error("cgroup v2: cannot write \"" + request + "\" to " + parent_control + ": " +
                           error_text(err));
    }
  }
  return write_value(join(h.group, "cgroup.subtree_control"), "+memory +pids +cpu", fake_tree_);
}

void CgroupManager::describe_hierarchies() {
  // Hierarchies sharing a path are listed together.
  std::vector<std::pair<std::string, std::vector<std::string>>> by_path;
  std::vector<std::string> all;
  for (const Hierarchy& h : hierarchies_) {
    std::string path = join(h.self_path.empty() ? "/" : h.self_path, name_);
    auto same = std::find_if(by_path.begin(), by_path.end(), [&](const auto& p) { return p.first == path; });
    if (same == by_path.end()) same = by_path.insert(by_path.end(), {path, {}});
    same->second.insert(same->second.end(), h.controllers.begin(), h.controllers.end());
    all.insert(all.end(), h.controllers.begin(), h.controllers.end());
  }
  description_ = std::string(version_ == CgroupVersion::kV1 ? "cgroup v1" : "cgroup v2") + " (" +
                 joined(all, ", ") + ") under ";
  if (by_path.size() == 1) {
    description_ += by_path.front().first;
  } else {
    std::vector<std::string> parts;
    for (const auto& [path, controllers] : by_path)
      parts.push_back(path + " (" + joined(controllers, ", ") + ")");
    description_ += joined(parts, ", ");
  }
  if (fake_tree_) description_ += " [fake tree at " + layout_.fs_root + "]";
}

// ---- CgroupManager: groups ----

Result<std::unique_ptr<InstanceCgroup>> CgroupManager::make_group(uint64_t index) const {
  std::vector<std::string> paths;
  for (const Hierarchy& h : hierarchies_) {
    std::string leaf = std::to_string(index);
    leaf.insert(leaf.begin(), 'i');  // not "i" + ...: GCC 12 warns on it (-Wrestrict, a false positive)
    std::string path = join(h.group, leaf);
    if (::mkdir(path.c_str(), 0755) != 0) {
      int err = errno;
      for (const std::string& made : paths) remove_tree(made, fake_tree_);
      return Status::error("cgroup: cannot create " + path + ": " + error_text(err));
    }
    paths.push_back(std::move(path));
  }
  return std::unique_ptr<InstanceCgroup>(new InstanceCgroup(version_, std::move(paths), fake_tree_));
}

const std::string& CgroupManager::path_of(const InstanceCgroup& group, const char* controller) const {
  for (size_t i = 0; i < hierarchies_.size(); ++i) {
    const std::vector<std::string>& c = hierarchies_[i].controllers;
    if (std::find(c.begin(), c.end(), controller) != c.end()) return group.paths_[i];
  }
  return group.paths_.front();  // not reached: every controller has a hierarchy
}

Status CgroupManager::write_limits(const InstanceCgroup& group, const CgroupLimits& limits) const {
  const std::string& memory = path_of(group, "memory");
  const std::string& pids = path_of(group, "pids");
  const std::string& cpu = path_of(group, "cpu");
  std::string processes = limits.max_processes ? std::to_string(limits.max_processes) : "max";
  if (version_ == CgroupVersion::kV1) {
    std::string bytes = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "-1";
    if (Status s = write_value(join(memory, "memory.limit_in_bytes"), bytes, fake_tree_); !s) return s;
    // memory+swap may not be below memory: written second. Present only when
    // the kernel accounts swap.
    std::string memsw = join(memory, "memory.memsw.limit_in_bytes");
    if (exists(memsw)) {
      if (Status s = write_value(memsw, bytes, fake_tree_); !s) return s;
    }
    if (Status s = write_value(join(pids, "pids.max"), processes, fake_tree_); !s) return s;
    if (limits.cpu > 0) {
      long long shares = std::clamp(std::llround(1024 * std::min(limits.cpu, 1e6)), 2LL, 262144LL);
      if (Status s = write_value(join(cpu, "cpu.shares"), std::to_string(shares), fake_tree_); !s) return s;
    }
    return Status::ok();
  }
  std::string bytes = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "max";
  if (Status s = write_value(join(memory, "memory.max"), bytes, fake_tree_); !s) return s;
  // v2 limits swap separately: none beside a memory limit, as on v1. Present
  // only when the kernel accounts swap.
  std::string swap = join(memory, "memory.swap.max");
  if (exists(swap)) {
    if (Status s = write_value(swap, limits.memory_bytes ? "0" : "max", fake_tree_); !s) return s;
  }
  if (Status s = write_value(join(pids, "pids.max"), processes, fake_tree_); !s) return s;
  if (limits.cpu > 0) {
    long long weight = std::clamp(std::llround(100 * std::min(limits.cpu, 1e6)), 1LL, 10000LL);
    if (Status s = write_value(join(cpu, "cpu.weight"), std::to_string(weight), fake_tree_); !s) return s;
  }
  return Status::ok();
}

Result<std::unique_ptr<InstanceCgroup>> CgroupManager::acquire(const CgroupLimits& limits) {
  if (!std::isfinite(limits.cpu) || limits.cpu < 0) {
    return Status::error(
        fmt::format("cgroup: cpu must be 0 (unset) or a positive share, got {}", limits.cpu));
  }
  std::unique_ptr<InstanceCgroup> group;
  uint64_t index = 0;
  {
    std::lock_guard lock(mutex_);
    if (!ready_.empty()) {
      group = std::move(ready_.front());
      ready_.pop_front();
    } else {
      index = next_index_++;
      // A burst outgrew the pool: keep more ready for the next one.
      pool_target_ = std::min(kMaxPool, std::max<size_t>(8, pool_target_ * 2));
    }
    refill_failed_ = false;
    start_thread_locked();
  }
  work_.notify_one();
  if (!group) {
    Result<std::unique_ptr<InstanceCgroup>> made = make_group(index);
    if (!made) return made.status();
    group = std::move(*made);
  }
  if (Status s = write_limits(*group, limits); !s) {
    release(std::move(group));
    return s;
  }
  group->memory_limit_bytes_ = limits.memory_bytes;
  return group;
}

CgroupManager::Reservation CgroupManager::reserve(size_t groups) {
  {
    std::lock_guard lock(mutex_);
    reserved_ += groups;
    retarget_locked();
    refill_failed_ = false;
    start_thread_locked();
  }
  work_.notify_one();
  return Reservation(this, groups);
}

void CgroupManager::unreserve(size_t groups) {
  std::lock_guard lock(mutex_);
  reserved_ -= std::min(reserved_, groups);
  retarget_locked();
}

void CgroupManager::retarget_locked() { pool_target_ = std::min(kMaxPool, std::max(base_target_, reserved_)); }

CgroupManager::Reservation& CgroupManager::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    if (manager_ != nullptr) manager_->unreserve(groups_);
    manager_ = std::exchange(other.manager_, nullptr);
    groups_ = other.groups_;
  }
  return *this;
}

CgroupManager::Reservation::~Reservation() {
  if (manager_ != nullptr) manager_->unreserve(groups_);
}

void CgroupManager::release(std::unique_ptr<InstanceCgroup> cgroup) {
  if (!cgroup) return;
  {
    std::lock_guard lock(mutex_);
    doomed_.insert(doomed_.end(), cgroup->paths_.begin(), cgroup->paths_.end());
    // Groups still busy from earlier releases are retried now too.
    retry_at_ = std::chrono::steady_clock::now();
    refill_failed_ = false;
    start_thread_locked();
  }
  work_.notify_one();
}

bool CgroupManager::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!idle_locked()) start_thread_locked();
  work_.notify_one();
  return idle_.wait_for(lock, timeout, [this] { return idle_locked(); });
}

bool CgroupManager::idle_locked() const {
  return doomed_.empty() && removing_ == 0 && !creating_ && (ready_.size() >= pool_target_ || refill_failed_);
}

void CgroupManager::start_thread_locked() {
  if (thread_.joinable() || stopping_) return;
  try {
    thread_ = std::thread([this] { background_loop(); });
  } catch (const std::system_error&) {
    // No thread (the process is out of threads): acquire() still creates
    // groups itself, and this is tried again at the next call.
  }
}

void CgroupManager::background_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    auto now = std::chrono::steady_clock::now();
    if (!doomed_.empty() && now >= retry_at_) {
      std::vector<std::string> batch;
      batch.swap(doomed_);
      removing_ = batch.size();
      lock.unlock();
      std::vector<std::string> busy;
      for (const std::string& dir : batch) {
        // Any error but EBUSY (say, EACCES) will not go away by retrying.
        if (remove_tree(dir, fake_tree_) == EBUSY) busy.push_back(dir);
      }
      lock.lock();
      removing_ = 0;
      doomed_.insert(doomed_.end(), busy.begin(), busy.end());
      if (busy.empty()) {
        retry_delay_ = kFirstRetryDelay;
      } else {
        retry_at_ = std::chrono::steady_clock::now() + retry_delay_;
        retry_delay_ = std::min(retry_delay_ * 2, kMaxRetryDelay);
      }
    } else if (ready_.size() < pool_target_ && !refill_failed_) {
      uint64_t index = next_index_++;
      creating_ = true;
      lock.unlock();
      Result<std::unique_ptr<InstanceCgroup>> group = make_group(index);
      lock.lock();
      creating_ = false;
      // A failure is acquire()'s to report, when it tries itself; retrying
      // here before then would only spin.
      if (group) {
        ready_.push_back(std::move(*group));
      } else {
        refill_failed_ = true;
      }
    } else {
      idle_.notify_all();
      if (doomed_.empty()) {
        work_.wait(lock);
      } else {
        work_.wait_until(lock, retry_at_);
      }
      continue;
    }
    if (idle_locked()) idle_.notify_all();
  }
}

CgroupManager::~CgroupManager() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
  ready_.clear();
  // Pool entries, groups never released and released ones not yet removed
  // are all below coil's group. Only the hierarchies where this manager made
  // that group: a failed create() may have stopped before.
  for (size_t i = 0; i < groups_made_; ++i) {
    const Hierarchy& h = hierarchies_[i];
    if (host_leaf_.empty()) {
      remove_tree_waiting(h.group, fake_tree_, kRemoveWait);
      continue;
    }
    for (const std::string& child : entries(h.group, true)) {
      std::string path = join(h.group, child);
      if (path != host_leaf_) remove_tree_waiting(path, fake_tree_, kRemoveWait);
    }
  }
  // Stale groups of earlier runs that were still busy: one more try (those
  // of this manager are gone by now, which remove_tree() takes as success).
  for (const std::string& dir : doomed_) remove_tree(dir, fake_tree_);
}

}  // namespace coil::sandbox
