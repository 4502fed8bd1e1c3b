// The cgroup layer of the sandbox: one cgroup per instance, limiting its
// memory, its number of processes and threads, and its share of the CPU. The
// (root) host creates the groups; an instance joins its group itself.
//
// Where. Groups live under the cgroup coil itself runs in, as read from
// /proc/self/cgroup per controller, never at a hierarchy's root:
//   cgroup v1: <fs_root>/<controller>/<coil's path>/<name>/i<N>, one directory
//              in each of the memory, pids and cpu hierarchies (controllers
//              mounted together share one directory);
//   cgroup v2: <fs_root>/<coil's path>/<name>/i<N>, one directory.
// <name> is coil's own group ("coil-<host pid>"); i<N> is one instance's,
// numbered by a counter that never repeats within a manager.
//
// Joining. The host hands the fds of InstanceCgroup::open_procs() to the
// process that forks the instance, and the instance writes "0" into each.
// The kernel checks the credentials of whoever opened the file, so the
// instance may already run as an unprivileged user.
//
// The OOM killer stays on: when an instance exceeds its memory limit the
// kernel kills it, and oom_killed() tells the host why it died.
//
// cgroup v2 enables controllers for a group's children only while the group
// itself holds no processes. If coil's own cgroup does not yet enable memory,
// pids and cpu for its children and the kernel refuses to (coil lives in it),
// create() moves the host into the leaf <name>/host and tries again; it fails,
// naming the group, when processes other than coil live there too. Hence:
// call create() before the host forks its children, so that they follow it
// into the leaf. The leaf holds the host until it exits, so ~CgroupManager
// leaves <name>/host and <name> behind; the next start removes them as stale.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace coil::sandbox {

// Every field's 0 means "no limit" (cpu: "the kernel's default").
struct CgroupLimits {
  // Swap is not extra: on v1 memory+swap gets the same limit, on v2 swap is
  // off (when the kernel accounts swap).
  uint64_t memory_bytes = 0;
  uint64_t max_processes = 0;  // threads count too (pids controller)
  double cpu = 0;  // relative share: 1.0 = the default weight (v1 cpu.shares 1024, v2 cpu.weight 100)
};

enum class CgroupVersion { kV1, kV2 };

// Where the cgroup filesystems are. The defaults are the real ones; unit
// tests point them at a fake tree in a temporary directory.
struct CgroupLayout {
  std::string fs_root = "/sys/fs/cgroup";
  std::string self_cgroup = "/proc/self/cgroup";
  // coil's own group; empty means "coil-<pid of this process>". At create(),
  // groups named coil-<pid> whose pid is dead are removed as stale, and so is
  // a leftover group called `name` itself (an earlier run with the same pid).
  std::string name;
  // Tests only: allow a tree of ordinary directories and files. Control files
  // are then created on write and removed before rmdir. Without it, create()
  // refuses a tree that is not a cgroup filesystem, so that a wrong fs_root
  // can never mean limits silently not applied.
  bool fake_tree = false;
};

// One instance's cgroup. Immutable once acquired, so every method may be
// called from any thread. It may outlive its manager; its directories are
// gone by then and its methods fail or report nothing.
class InstanceCgroup {
 public:
  // cgroup.procs of each hierarchy (paths() order), opened O_WRONLY|O_CLOEXEC
  // with the caller's credentials. Writing "0" into each moves the writer.
  Result<std::vector<unique_fd>> open_procs() const;

  // Whether the kernel's OOM killer killed a process in this group
  // (v1 memory.oom_control, v2 memory.events: "oom_kill N" with N > 0).
  bool oom_killed() const;

  // The memory limit this group was given; 0 = none.
  uint64_t memory_limit_bytes() const { return memory_limit_bytes_; }

  // SIGKILLs every process in the group: v2 writes "1" to cgroup.kill when
  // the kernel has it; otherwise the pids listed in cgroup.procs are killed,
  // again until no new ones appear (a process forking while it is killed).
  // For a daemon an instance left behind; never kills coil itself.
  void kill_all() const;

  // The group's directory in each hierarchy: one on v2; on v1 one per
  // distinct hierarchy, in the order memory, pids, cpu.
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  friend class CgroupManager;
  InstanceCgroup(CgroupVersion version, std::vector<std::string> paths, bool fake_tree)
      : version_(version), paths_(std::move(paths)), fake_tree_(fake_tree) {}

  CgroupVersion version_;
  std::vector<std::string> paths_;
  bool fake_tree_;
  uint64_t memory_limit_bytes_ = 0;
};

// Creates, pools and removes instance cgroups.
//
// Thread-safety: acquire(), release() and wait_idle() may be called from any
// thread. acquire() takes a mutex and writes the limits of one ready group; it
// creates a group itself only when the pool is empty. release() only takes a
// mutex. Pool entries are made, and released groups removed, by a background
// thread, which starts at the first acquire(), release() or reserve() (so that create()
// leaves the process single-threaded, fit to fork).
class CgroupManager {
 public:
  // Detects the cgroup version, removes stale groups, creates coil's group
  // and `pool_size` ready instance groups.
  //   v1: /proc/self/cgroup names the memory, pids and cpu controllers in
  //       v1 lines, and <fs_root>/<controller> exists for each;
  //   v2: otherwise, when its "0::<path>" line exists and
  //       <fs_root>/<path>/cgroup.controllers lists memory, pids and cpu.
  // Errors name what is missing ("cgroup v1: no pids controller in
  // /proc/self/cgroup"), and what v2 lacked too when both were possible.
  static Result<std::unique_ptr<CgroupManager>> create(const CgroupLayout& layout, size_t pool_size = 8);

  CgroupVersion version() const { return version_; }

  // "cgroup v1 (memory, pids, cpu) under /process_api/4143e9/coil-123 (memory), /coil-123 (pids, cpu)";
  // one path when every hierarchy has the same.
  std::string describe() const { return description_; }

  // A group with `limits` written into it: a ready one from the pool (the
  // background thread then makes another), else one created now. An error
  // means the group could not be created or a limit not written; nothing is
  // left behind.
  Result<std::unique_ptr<InstanceCgroup>> acquire(const CgroupLimits& limits);

  // Ready groups kept for someone (a function pool) while this lives; see reserve().
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept
        : manager_(std::exchange(other.manager_, nullptr)), groups_(other.groups_) {}
    Reservation& operator=(Reservation&& other) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation();

   private:
    friend class CgroupManager;
    Reservation(CgroupManager* manager, size_t groups) : manager_(manager), groups_(groups) {}
    CgroupManager* manager_ = nullptr;
    size_t groups_ = 0;
  };

  // Adds `groups` to the ready groups reserved, made by the background
  // thread, for as long as the reservation lives: a function pool reserves
  // one for every process it may run at once (each instance, its standby and
  // its template), so that a burst finds its groups made, under coil up and
  // coil server alike. The pool's target is the sum of the live
  // reservations, at least the size given to create() and at most kMaxPool. An empty pool at acquire() (a
  // burst larger than the pool) doubles the target until the reservations
  // next change. Ready groups above a lowered target stay until acquired.
  // Each ready group costs the kernel about 22 KiB (a memory cgroup). The
  // manager must outlive its reservations.
  Reservation reserve(size_t groups);
  static constexpr size_t kMaxPool = 256;

  // Call once the instance has exited. Processes still in the group are
  // killed and the group is removed by the background thread; a group the
  // kernel still calls busy is retried later (and at every release()).
  void release(std::unique_ptr<InstanceCgroup> cgroup);

  // Blocks until the pool is full and every released or stale group is
  // removed, or until `timeout`; returns whether that happened. For tests and
  // orderly shutdown, never for the event loop.
  bool wait_idle(std::chrono::milliseconds timeout);

  // Stops the background thread, kills what is left in coil's groups and
  // removes them, including groups acquired and not released (waiting up to
  // a second per group for killed processes to exit).
  ~CgroupManager();

  CgroupManager(const CgroupManager&) = delete;
  CgroupManager& operator=(const CgroupManager&) = delete;

 private:
  struct Hierarchy {
    std::vector<std::string> controllers;  // of the three coil uses, those mounted here
    std::string self_path;                 // coil's cgroup, relative to the hierarchy's root
    std::string base;                      // coil's cgroup directory
    std::string group;                     // base/<name>
  };

  CgroupManager(const CgroupLayout& layout, size_t pool_size);

  Status detect_v1(const std::string& self_text);
  Status detect_v2(const std::string& self_text);
  Status check_filesystems();
  Status clean_and_create_groups();
  Status enable_v2_controllers();
  void describe_hierarchies();

  Result<std::unique_ptr<InstanceCgroup>> make_group(uint64_t index) const;
  Status write_limits(const InstanceCgroup& group, const CgroupLimits& limits) const;
  const std::string& path_of(const InstanceCgroup& group, const char* controller) const;

  void start_thread_locked();
  bool idle_locked() const;
  void background_loop();
  void unreserve(size_t groups);
  void retarget_locked();  // pool_target_ from the reservations

  const CgroupLayout layout_;
  const size_t base_target_;  // the pool size given to create()
  size_t reserved_ = 0;       // the sum of the live reservations (under mutex_)
  size_t pool_target_;        // ready groups the background thread keeps (under mutex_)
  std::string name_;
  CgroupVersion version_ = CgroupVersion::kV1;
  std::vector<Hierarchy> hierarchies_;
  size_t groups_made_ = 0;  // hierarchies_[0, groups_made_) have <name> created by this manager
  bool fake_tree_ = false;
  std::string host_leaf_;  // v2: <name>/host, when create() had to move the host there
  std::string description_;

  std::mutex mutex_;
  std::condition_variable work_;  // wakes the background thread
  std::condition_variable idle_;  // wakes wait_idle()
  std::deque<std::unique_ptr<InstanceCgroup>> ready_;
  std::vector<std::string> doomed_;  // directories to kill and remove
  uint64_t next_index_ = 0;
  size_t removing_ = 0;         // directories taken off doomed_ by the thread, not yet done
  bool creating_ = false;       // the thread is making a pool entry
  bool refill_failed_ = false;  // the last refill failed: wait for the next acquire()/release()
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds retry_delay_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace coil::sandbox
