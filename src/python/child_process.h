// Process plumbing shared by the zygote, templates and instances (the
// processes that run Python). Everything here runs in a single-threaded
// process right after fork(), so it reports failures by return value and
// never throws.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace coil::python {

// fork() with CPython's fork hooks (PyOS_BeforeFork / AfterFork_*), so that
// Python's at-fork handlers run (random reseeding among them) and the
// interpreter's locks are reset in the child. Call with the GIL held.
pid_t fork_python();

// fork_python() into new namespaces (clone(2) flags such as CLONE_NEWPID):
// the child is then pid 1 of its own pid namespace, so that every process
// it forks dies with it. In the parent, `*pidfd` is a pidfd of the child
// (CLONE_PIDFD), to tell it from a process that reused its pid.
pid_t clone_python(unsigned long namespace_flags, int* pidfd);

// In a freshly forked child: die with SIGKILL when the parent dies, and exit
// at once if it already did (the fork raced with its death). A parent in
// another pid namespace shows as pid 0: pass 0 then. `title` names
// the process in ps/top (15 bytes at most are kept).
Status bind_to_parent(pid_t expected_parent, const std::string& title);

// Points stdout and stderr at `fd` (and closes `fd`).
Status redirect_output(int fd);

// The signals whose disposition is not the default in this process: what
// reset_signals() must restore in its children (one sigaction per signal).
std::vector<int> signals_not_default();

// Restores the default disposition of `changed` (signals_not_default() of
// the parent, taken after its last change), an empty mask, and ignores
// SIGPIPE and SIGXFSZ, so that function code (subprocess, signal handlers of
// its own) behaves as in a plain Python process. Restoring only what the
// parent changed saves some sixty system calls per instance.
void reset_signals(const std::vector<int>& changed);

// Writes all of `data` to a blocking fd. False on error (errno set).
bool write_all(int fd, const char* data, size_t size);

}  // namespace coil::python
