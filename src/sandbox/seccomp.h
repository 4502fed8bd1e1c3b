// The seccomp-bpf layer of the sandbox: a filter, built with libseccomp,
// that refuses the system calls function code has no business making.
//
// Contract: install_seccomp_filter() is called in a single-threaded process
// (a template, before it imports the function's code); the filter is then
// inherited by every instance forked from it and by every thread they start
// ("Seccomp: 2" in each /proc/PID/task/TID/status). It sets no_new_privs.
//
// Refused with EPERM: ptrace, mount/umount2/pivot_root/chroot, bpf,
// keyctl/add_key/request_key, userfaultfd, perf_event_open, io_uring_*,
// kexec_*, init/finit/delete_module, unshare, setns, clone with any
// namespace flag, reboot, swapon/swapoff, acct, quotactl,
// open_by_handle_at, pidfd_getfd, process_vm_readv/writev, process_madvise,
// the new mount API (fsopen, fsconfig, fsmount, fspick, move_mount,
// open_tree, mount_setattr), setrlimit and prlimit64 that sets a limit (the
// limits of rlimit.h stay), and ioctl TIOCSTI/TIOCLINUX (compared on the low 32
// bits, so high bits set by the caller change nothing). clone3 fails with
// ENOSYS, so that glibc falls back to clone, whose flags the filter can
// read. A system call from another ABI (i386 `int 0x80`, x32) kills the
// process (SIGSYS).
//
// `Strictness::kAllowPrivateMounts` is the template's filter for a function
// with per-instance ephemeral volumes: it lets `unshare` through when its
// flags are exactly CLONE_NEWUSER | CLONE_NEWNS, and `mount`, so that each
// instance can give itself a private mount namespace (an unprivileged user
// namespace of its own) and its tmpfs volumes, before it stacks the strict
// filter on top (instance_mounts.h). Functions without such volumes never
// get it.
#pragma once

#include "common/status.h"

namespace coil::sandbox {

enum class Strictness { kStrict, kAllowPrivateMounts };

Status install_seccomp_filter(Strictness strictness = Strictness::kStrict);

}  // namespace coil::sandbox
