#include "sandbox/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/unique_fd.h"
#include "sandbox/namespaces.h"

namespace coil::sandbox {
namespace {

Status os_error(const std::string& what) { return Status::error(what + ": " + std::strerror(errno)); }

std::string staged(const std::string& path) { return std::string(kStagingRoot) + path; }

Status make_dir(const std::string& path, mode_t mode = 0755) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return os_error("mkdir " + path);
  return Status::ok();
}

// mkdir -p below the staging root, for volume mount points.
Status make_dirs(const std::string& inside) {
  std::string path = kStagingRoot;
  size_t start = 1;
  while (start <= inside.size()) {
    size_t end = inside.find('/', start);
    if (end == std::string::npos) end = inside.size();
    path += '/';
    path.append(inside, start, end - start);
    if (Status s = make_dir(path); !s) return s;
    start = end + 1;
  }
  return Status::ok();
}

Status mount_tmpfs(const std::string& target, const std::string& options, unsigned long flags = 0) {
  if (::mount("tmpfs", target.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | flags, options.c_str()) != 0) {
    return os_error("mount tmpfs on " + target);
  }
  return Status::ok();
}

// Sets (or clears) mount attributes, recursively when asked. mount_setattr
// changes only the named attributes, so the flags the kernel locked on the
// host's mounts (atime, ...) are kept, where a MS_REMOUNT would have to
// restate them all.
Status set_attributes(const std::string& target, uint64_t set, bool recursive) {
  mount_attr attr{};
  attr.attr_set = set;
  unsigned flags = recursive ? AT_RECURSIVE : 0;
  if (::syscall(SYS_mount_setattr, AT_FDCWD, target.c_str(), flags, &attr, sizeof(attr)) != 0) {
    return os_error("mount_setattr " + target);
  }
  return Status::ok();
}

Status bind(const std::string& source, const std::string& target, uint64_t attributes) {
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return os_error("bind " + source + " on " + target);
  }
  return set_attributes(target, attributes, true);
}

constexpr uint64_t kReadOnly = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
constexpr uint64_t kWritable = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

Status write_text(const std::string& path, const std::string& text) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return os_error("write " + path);
  }
  return Status::ok();
}

// The host's top-level links of a merged /usr (/bin -> usr/bin, ...) are
// recreated; a real directory there (an unmerged system) is bound read-only.
Status link_or_bind_top_level(const char* name) {
  std::string host = std::string("/") + name;
  struct stat st {};
  if (::lstat(host.c_str(), &st) != 0) return Status::ok();  // not on this system
  if (S_ISLNK(st.st_mode)) {
    char target[256];
    ssize_t n = ::readlink(host.c_str(), target, sizeof(target) - 1);
    if (n < 0) return os_error("readlink " + host);
    target[n] = '\0';
    if (::symlink(target, staged(host).c_str()) != 0) return os_error("symlink " + staged(host));
    return Status::ok();
  }
  if (!S_ISDIR(st.st_mode)) return Status::ok();
  if (Status s = make_dir(staged(host)); !s) return s;
  return bind(host, staged(host), kReadOnly);
}

Status assemble_etc() {
  const std::string etc = staged("/etc");
  if (Status s = make_dir(etc); !s) return s;
  if (Status s = mount_tmpfs(etc, "mode=0755,size=1m"); !s) return s;
  const std::string function_uid = std::to_string(kFunctionUid);
  const struct {
    const char* name;
    std::string text;
  } files[] = {
      {"passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\ncoil:x:" + function_uid + ":" + function_uid +
                     ":coil function:/tmp:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
      {"group", "root:x:0:\ncoil:x:" + function_uid + ":\nnogroup:x:65534:\n"},
      {"hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
      {"nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"},
      {"hostname", "coil\n"},
  };
  for (const auto& file : files) {
    if (Status s = write_text(etc + "/" + file.name, file.text); !s) return s;
  }
  // TLS certificates (their links point into /usr/share), the time zone.
  struct stat st {};
  if (::stat("/etc/ssl", &st) == 0 && S_ISDIR(st.st_mode)) {
    if (Status s = make_dir(etc + "/ssl"); !s) return s;
    if (Status s = bind("/etc/ssl", etc + "/ssl", kReadOnly); !s) return s;
  }
  char zone[256];
  ssize_t n = ::readlink("/etc/localtime", zone, sizeof(zone) - 1);
  if (n > 0) {
    zone[n] = '\0';
    if (::symlink(zone, (etc + "/localtime").c_str()) != 0) return os_error("symlink /etc/localtime");
  }
  return set_attributes(etc, MOUNT_ATTR_RDONLY, false);
}

Status assemble_dev(uint64_t shm_mb) {
  const std::string dev = staged("/dev");
  if (Status s = make_dir(dev); !s) return s;
  // nodev too: the device nodes below are bind mounts, which keep their own flags.
  if (::mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=0755,size=64k") != 0) {
    return os_error("mount tmpfs on " + dev);
  }
  for (const char* node : {"null", "zero", "full", "random", "urandom"}) {
    std::string target = dev + "/" + node;
    unique_fd placeholder(::open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666));
    if (!placeholder) return os_error("create " + target);
    std::string source = std::string("/dev/") + node;
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return os_error("bind " + source);
    }
    if (Status s = set_attributes(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false); !s) return s;
  }
  const std::pair<const char*, const char*> links[] = {
      {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
      {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"}};
  for (const auto& [name, target] : links) {
    if (::symlink(target, (dev + "/" + name).c_str()) != 0) return os_error(std::string("symlink /dev/") + name);
  }
  // multiprocessing's locks and queues live in /dev/shm.
  const std::string shm = dev + "/shm";
  if (Status s = make_dir(shm); !s) return s;
  if (Status s = mount_tmpfs(shm, "mode=1777,size=" + std::to_string(shm_mb) + "m", MS_NOEXEC); !s) return s;
  return set_attributes(dev, MOUNT_ATTR_RDONLY, false);
}

}  // namespace

Status assemble_root(const MountPlan& plan) {
  // Nothing done here may propagate back to the host's mounts.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return os_error("make / private");

  // Sources first: the staging tmpfs may cover them (a code directory in /tmp).
  unique_fd code(::open(plan.code_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!code) return os_error("open code directory " + plan.code_dir);
  struct stat st {};
  if (::fstat(code.get(), &st) != 0) return os_error("stat " + plan.code_dir);
  if ((st.st_mode & 05) != 05) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return Status::error("the code directory " + plan.code_dir + " (mode " + mode +
                         ") is not readable by the sandbox's user; make it world-readable (chmod -R o+rX)");
  }
  std::vector<unique_fd> volume_sources;
  for (const VolumeMount& volume : plan.volumes) {
    if (volume.kind == VolumeMount::Kind::kEphemeral) {
      volume_sources.emplace_back();
      continue;
    }
    unique_fd fd(::open(volume.host_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return os_error("open volume " + volume.host_path);
    volume_sources.push_back(std::move(fd));
  }
  auto fd_path = [](const unique_fd& fd) { return "/proc/self/fd/" + std::to_string(fd.get()); };

  if (Status s = mount_tmpfs(kStagingRoot, "mode=0755,size=1m"); !s) return s;
  for (const char* dir : {"/usr", "/code", "/tmp", "/proc", "/root"}) {
    if (Status s = make_dir(staged(dir)); !s) return s;
  }
  if (Status s = bind("/usr", staged("/usr"), kReadOnly); !s) return s;
  for (const char* name : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    if (Status s = link_or_bind_top_level(name); !s) return s;
  }
  if (Status s = assemble_etc(); !s) return s;
  if (Status s = assemble_dev(std::min<uint64_t>(plan.tmp_mb, 64)); !s) return s;
  if (Status s = bind(fd_path(code), staged(kCodeMount), kReadOnly); !s) return s;
  if (Status s = mount_tmpfs(staged("/tmp"), "mode=1777,size=" + std::to_string(plan.tmp_mb) + "m"); !s) return s;

  for (size_t i = 0; i < plan.volumes.size(); ++i) {
    const VolumeMount& volume = plan.volumes[i];
    if (Status s = make_dirs(volume.mount); !s) return s;
    const std::string target = staged(volume.mount);
    Status s;
    switch (volume.kind) {
      case VolumeMount::Kind::kReadonly: s = bind(fd_path(volume_sources[i]), target, kReadOnly); break;
      case VolumeMount::Kind::kPersistent: s = bind(fd_path(volume_sources[i]), target, kWritable); break;
      case VolumeMount::Kind::kEphemeral:
        break;  // per instance: each instance mounts its own (instance_mounts.h)
    }
    if (!s) return Status::error("volume " + volume.mount + ": " + s.message());
  }
  // The root itself is read-only too (mount points were made above).
  return set_attributes(kStagingRoot, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false);
}

Status enter_root() {
  // /proc belongs to the new pid namespace, so it is mounted from inside it;
  // and before the old root goes, since the kernel lets a user namespace
  // mount proc only where a full procfs is already visible.
  if (::mount("proc", staged("/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    return os_error("mount /proc");
  }
  if (::chdir(kStagingRoot) != 0) return os_error("chdir new root");
  // pivot_root(".", "."): the old root ends up stacked under the new one at
  // "/", from where it is detached.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return os_error("pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) return os_error("detach the old root");
  if (::chdir(kCodeMount) != 0) return os_error("chdir /code");
  return Status::ok();
}

}  // namespace coil::sandbox
