#include "sandbox/seccomp.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>

#include <cstring>
#include <memory>
#include <string>

namespace coil::sandbox {
namespace {

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

constexpr const char* kRefused[] = {
    "ptrace",       "mount",           "umount2",        "pivot_root",     "chroot",
    "bpf",          "keyctl",          "add_key",        "request_key",    "userfaultfd",
    "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load",
    "kexec_file_load", "init_module",   "finit_module",   "delete_module",  "unshare",
    "setns",        "reboot",          "swapon",         "swapoff",        "acct",
    "quotactl",     "open_by_handle_at", "setrlimit",
    // Another process's memory or fds (same uid: the template, sibling instances).
    "pidfd_getfd",  "process_vm_readv", "process_vm_writev", "process_madvise",
    // The new mount API: the file system code it opens is attack surface even
    // inside a user namespace of one's own.
    "fsopen",       "fsconfig",        "fsmount",        "fspick",         "move_mount",
    "open_tree",    "mount_setattr",
};

constexpr uint64_t kNamespaceFlags[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
                                        CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP, CLONE_NEWTIME};

Status failed(const char* what, int rc) {
  return Status::error(std::string("seccomp: ") + what + ": " + std::strerror(-rc));
}

}  // namespace

Status install_seccomp_filter(Strictness strictness) {
  const bool private_mounts = strictness == Strictness::kAllowPrivateMounts;
  std::unique_ptr<void, FilterDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Status::error("seccomp: cannot create a filter");
  int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  if (rc != 0) return failed("bad-architecture action", rc);

  for (const char* name : kRefused) {
    if (private_mounts && (std::strcmp(name, "mount") == 0 || std::strcmp(name, "unshare") == 0)) continue;
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not a system call of this architecture
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc != 0) return failed(name, rc);
  }
  if (private_mounts) {
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                          SCMP_A0(SCMP_CMP_NE, CLONE_NEWUSER | CLONE_NEWNS));
    if (rc != 0) return failed("unshare", rc);
  }
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc != 0) return failed("clone3", rc);
  for (uint64_t flag : kNamespaceFlags) {
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc != 0) return failed("clone", rc);
  }
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)}) {
    rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, request));
    if (rc != 0) return failed("ioctl", rc);
  }
  // prlimit64 reads limits too (glibc's getrlimit uses it): refuse it only
  // when it would set one.
  rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_NE, 0));
  if (rc != 0) return failed("prlimit64", rc);
  rc = seccomp_load(ctx.get());  // also sets no_new_privs (SCMP_FLTATR_CTL_NNP)
  if (rc != 0) return failed("load", rc);
  return Status::ok();
}

}  // namespace coil::sandbox
