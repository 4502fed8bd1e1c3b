#include "python/child_process.h"

#include <Python.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace coil::python {

pid_t fork_python() {
  PyOS_BeforeFork();
  pid_t pid = ::fork();
  if (pid == 0) {
    PyOS_AfterFork_Child();
  } else {
    PyOS_AfterFork_Parent();
  }
  return pid;
}

pid_t clone_python(unsigned long namespace_flags, int* pidfd) {
  *pidfd = -1;
  PyOS_BeforeFork();
  // The raw system call, as bubblewrap and systemd do: glibc has no fork()
  // that takes clone flags. glibc keeps no pid cache and raise() asks the
  // kernel for the thread id, so the child is a sound single-threaded process.
  auto pid = static_cast<pid_t>(
      ::syscall(SYS_clone, namespace_flags | CLONE_PIDFD | SIGCHLD, nullptr, pidfd, nullptr, 0));
  int saved_errno = errno;
  if (pid == 0) {
    PyOS_AfterFork_Child();
  } else {
    PyOS_AfterFork_Parent();
  }
  errno = saved_errno;
  return pid;
}

Status bind_to_parent(pid_t expected_parent, const std::string& title) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    return Status::error(std::string("prctl(PR_SET_PDEATHSIG): ") + std::strerror(errno));
  }
  if (::getppid() != expected_parent) _exit(1);  // the parent died before prctl took effect
  ::prctl(PR_SET_NAME, title.substr(0, 15).c_str());
  return Status::ok();
}

Status redirect_output(int fd) {
  if (::dup2(fd, STDOUT_FILENO) < 0 || ::dup2(fd, STDERR_FILENO) < 0) {
    return Status::error(std::string("dup2: ") + std::strerror(errno));
  }
  if (fd != STDOUT_FILENO && fd != STDERR_FILENO) ::close(fd);
  return Status::ok();
}

std::vector<int> signals_not_default() {
  std::vector<int> changed;
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0) continue;  // not a signal (32, 33: glibc's own)
    if (current.sa_handler != SIG_DFL || (current.sa_flags & SA_SIGINFO) != 0) changed.push_back(sig);
  }
  return changed;
}

void reset_signals(const std::vector<int>& changed) {
  // As a plain `python3` does at start-up: a closed pipe or socket is an
  // OSError (BrokenPipeError), not death by signal.
  auto ignored_by_python = [](int sig) { return sig == SIGPIPE || sig == SIGXFSZ; };
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  for (int sig : changed) {
    if (!ignored_by_python(sig)) ::sigaction(sig, &action, nullptr);  // errors: SIGKILL/SIGSTOP
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  action.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &action, nullptr);
  ::sigaction(SIGXFSZ, &action, nullptr);
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace coil::python
