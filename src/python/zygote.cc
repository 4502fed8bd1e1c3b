#include "python/page_hints.h"
#include "python/zygote.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "protocol/control.h"
#include "python/child_process.h"
#include "python/command_line.h"
#include "python/instance.h"
#include "python/interpreter.h"
#include "sandbox/contain.h"
#include "sandbox/instance_mounts.h"
#include "sandbox/namespaces.h"

namespace coil::python {
namespace {

uint64_t now_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "coil: %s: %s\n", what, std::strerror(errno));
  _exit(1);
}

// The message of a pending coil._runtime.LoadError (complete in itself),
// after printing its cause's traceback to the log. Clears the error.
std::string take_load_error() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  PyObject* cause = value ? PyException_GetCause(value) : nullptr;
  if (cause != nullptr) {
    PyObject* cause_traceback = PyException_GetTraceback(cause);
    PyErr_Display(reinterpret_cast<PyObject*>(Py_TYPE(cause)), cause, cause_traceback);
    Py_XDECREF(cause_traceback);
    Py_DECREF(cause);
  }
  PyErr_Restore(type, value, traceback);
  std::string summary = take_exception_summary();
  return summary.rfind("LoadError: ", 0) == 0 ? summary.substr(11) : summary;
}

// coil.before_snapshot / coil.after_restore hooks; false with the Python
// error set when one fails.
bool run_hooks(const char* which) {
  PyObject* run = import_attr("coil._runtime", "run_hooks");
  PyObject* result = run ? PyObject_CallFunction(run, "s", which) : nullptr;
  Py_XDECREF(run);
  if (result == nullptr) return false;
  Py_DECREF(result);
  return true;
}

// Whether code registered any coil.after_restore hook (an error counts as
// yes: running the hooks then reports it).
bool after_restore_hooks_registered() {
  PyObject* hooks = import_attr("coil", "_after_restore");
  if (hooks == nullptr) {
    PyErr_Clear();
    return true;
  }
  bool any = !PyList_Check(hooks) || PyList_GET_SIZE(hooks) > 0;
  Py_DECREF(hooks);
  return any;
}

// In an ASGI standby: target.prepare(), its event loop and lifespan startup
// made ahead of need (coil._asgi.Instance). prepare() ends the standby itself
// when startup fails; anything else that escapes it ends the standby too (the
// instance is then forked when needed, and the failure shows there).
void prepare_ahead(PyObject* target) {
  PyObject* result = PyObject_CallMethod(target, "prepare", nullptr);
  if (result == nullptr) {
    std::fprintf(stderr, "coil: the standby could not prepare: %s\n", take_exception_summary().c_str());
    _exit(1);
  }
  Py_DECREF(result);
}

// In an ASGI standby that will not serve (coil stops: kRetire):
// target.retire(), the lifespan shutdown of the startup prepare_ahead() ran.
void retire_prepared(PyObject* target) {
  PyObject* result = PyObject_CallMethod(target, "retire", nullptr);
  if (result == nullptr) {
    std::fprintf(stderr, "coil: the standby's lifespan shutdown failed: %s\n", take_exception_summary().c_str());
    return;
  }
  Py_DECREF(result);
}

// The threads of this process other than the calling one, as "name (tid)"
// from /proc/self/task: what the import started behind Python's back (C
// libraries' threads are invisible to `threading`). "" when there are none.
std::string extra_threads() {
  std::string found;
  DIR* tasks = ::opendir("/proc/self/task");
  if (tasks == nullptr) return found;
  pid_t self = static_cast<pid_t>(::syscall(SYS_gettid));
  while (dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    if (std::strtol(entry->d_name, nullptr, 10) == self) continue;
    std::string name = "?";
    if (FILE* comm = std::fopen(("/proc/self/task/" + std::string(entry->d_name) + "/comm").c_str(), "r")) {
      char buffer[64] = {0};
      if (std::fgets(buffer, sizeof(buffer), comm) != nullptr) {
        name = buffer;
        if (!name.empty() && name.back() == '\n') name.pop_back();
      }
      std::fclose(comm);
    }
    if (!found.empty()) found += ", ";
    found += name + " (" + entry->d_name + ")";
  }
  ::closedir(tasks);
  return found;
}

// The argv and envp of an execve of python3.11 running coil-python.so's
// `command` (command_line.h), with this process's environment (the
// function's, as Python set it) plus `extra_env`. Built ahead, so that a
// child of a multi-threaded process only has to pass the pointers.
struct ExecLine {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::vector<char*> argv;
  std::vector<char*> envp;

  explicit ExecLine(const std::vector<std::string>& command, const std::vector<std::string>& extra_env = {})
      : args(python_command_line(command)) {
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    for (std::string& variable : env) envp.push_back(variable.data());
    envp.push_back(nullptr);
  }
  ExecLine(const ExecLine&) = delete;  // argv and envp point into args and env
  ExecLine& operator=(const ExecLine&) = delete;
};

// What a multi-threaded template needs to start instances as fresh
// processes: the command line and environment, built before any fork
// (after fork, a child of a multi-threaded process may only make
// async-signal-safe calls until it execs).
//
// The instance runs coil-python.so as the zygote does, from the copy the
// template inherited (runtime_module), which the child puts on fd 4
// (command_line.h).
struct FreshStart {
  int runtime_module;
  ExecLine exec;

  FreshStart(int module_fd, const control::BuildTemplate& spec, const std::string& kind,
             const std::vector<sandbox::InstanceMount>& mounts)
      : runtime_module(module_fd), exec(instance_command(spec, kind, mounts)) {}

  static std::vector<std::string> instance_command(const control::BuildTemplate& spec, const std::string& kind,
                                                   const std::vector<sandbox::InstanceMount>& mounts) {
    std::vector<std::string> command = {"__instance", spec.function, spec.entrypoint, "kind=" + kind};
    for (const sandbox::InstanceMount& m : mounts) {
      command.push_back("volume=" + m.mount + ":" + std::to_string(m.size_mib));
    }
    if (!spec.root_path_in_path.empty()) command.push_back("root_path_in_path=" + spec.root_path_in_path);
    if (!spec.served_under_prefix) command.push_back("served_under_prefix=false");
    return command;
  }
};

// fork + exec of python3.11 with coil-python.so's `__instance`; the child
// only makes async-signal-safe calls: it joins its cgroups, puts the
// instance socket on fd 3, the runtime module on fd 4 and its output on 1
// and 2, closes everything else and execs.
pid_t start_fresh_instance(const FreshStart& fresh, control::Message& request, int output) {
  int fds[control::kMaxFds];
  size_t count = request.fds.size();
  for (size_t i = 0; i < count; ++i) fds[i] = request.fds[i].get();
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (size_t i = 1; i < count; ++i) {
    if (::write(fds[i], "0", 1) != 1) _exit(126);
  }
  // Out of the way first (a wanted fd may sit on 1, 2 or 3), then into place.
  // (just above them: max_open_files may be as low as 16).
  int socket = ::fcntl(fds[0], F_DUPFD, kRuntimeModuleFd + 1);
  int out = ::fcntl(output, F_DUPFD, kRuntimeModuleFd + 1);
  int module = ::fcntl(fresh.runtime_module, F_DUPFD, kRuntimeModuleFd + 1);
  if (socket < 0 || out < 0 || module < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0 || ::dup2(socket, 3) < 0 ||
      ::dup2(module, kRuntimeModuleFd) < 0) {
    _exit(126);
  }
  if (::close_range(kRuntimeModuleFd + 1, ~0U, 0) != 0) _exit(126);
  ::execve("/proc/self/exe", fresh.exec.argv.data(), fresh.exec.envp.data());
  _exit(127);
}

// The template's side of its instances: it forks them on request, keeps
// standbys ready, and reports their exits.
//
// A standby is an instance forked ahead of need (kPrepare): it has joined its
// cgroups (the slow part of a start: an RCU grace period on cgroup v1), run
// the after_restore hooks and, for ASGI, its event loop and lifespan startup,
// and faulted in the pages a first request needs (page_hints.h); it waits for
// its instance socket. A kSpawn naming a standby's token hands it the socket,
// and it serves. A kSpawn with any other token forks a new instance on the
// spot. A standby that dies before it serves is said in the template's log,
// with what it printed.
class TemplateServer {
 public:
  TemplateServer(int control, int signal_fd, PyObject* invoke, std::string function, std::string kind,
                 const FreshStart* fresh, std::vector<sandbox::InstanceMount> mounts)
      : control_(control), signal_fd_(signal_fd), invoke_(invoke), function_(std::move(function)),
        kind_(std::move(kind)), fresh_(fresh), mounts_(std::move(mounts)) {}

  void on_request(control::Message& request) {
    if (request.type == control::Type::kPrepare) {
      prepare(request);
    } else if (request.type == control::Type::kSpawn) {
      spawn(request);
    } else if (request.type == control::Type::kPageHints) {
      // For the standbys forked from now on; later reports refine the hints.
      page_hints_ = page_hints::merge(page_hints_, request.message);
    } else if (request.type == control::Type::kRetire) {
      retire();
    }
  }

  // After kRetire, once the standbys and the instances have all exited: the
  // template's work is done.
  bool retired() const { return retiring_ && instances_.empty() && retiring_standbys_.empty(); }

  // The output pipes of retiring standbys still open: read as they write
  // (pass_on_retiring_output()), since one that fills its pipe would block.
  std::vector<int> retiring_outputs() const {
    std::vector<int> fds;
    for (const auto& [pid, output] : retiring_standbys_) {
      if (output) fds.push_back(output.get());
    }
    return fds;
  }

  void pass_on_retiring_output(int fd) {
    for (auto& [pid, output] : retiring_standbys_) {
      if (output.get() == fd && pass_on_output(fd)) output.reset();
    }
  }

  // Reaps every child, and reports the instances among them. (A template
  // that is pid 1 of its namespace also inherits what its instances
  // double-forked; a standby that died is forgotten, and its token falls
  // back to a fork.)
  void report_exits() {
    signalfd_siginfo info;
    while (::read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
    }
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (auto it = retiring_standbys_.find(pid); it != retiring_standbys_.end()) {
        if (it->second) pass_on_output(it->second.get());  // its last words
        retiring_standbys_.erase(it);
      }
      for (auto& [token, standby] : standbys_) {
        if (standby.pid == pid) {
          standby.pid = -1;
          say_standby_died(standby, status);
        }
      }
      if (instances_.erase(pid) == 0) continue;
      control::Message exited;
      exited.type = control::Type::kExited;
      exited.pid = static_cast<uint32_t>(pid);
      exited.wait_status = status;
      (void)control::send(control_, exited);
    }
  }

 private:
  struct Standby {
    pid_t pid = -1;
    unique_fd channel;                  // hands the instance socket over
    unique_fd output;                   // read end of its stdout/stderr
    std::vector<unique_fd> cgroup_fds;  // kept for the fallback fork
  };

  // The child's side, after fork (and for a standby, after the socket came):
  // signals and hooks (unless a standby did them ahead), then the instance
  // loop. Never returns.
  [[noreturn]] void become_instance(int socket, bool prepared = false) {
    if (!prepared) {
      reset_signals(changed_signals_);
      run_after_restore_hooks();
    }
    if (kind_ == "handler") run_handler_instance(socket, invoke_, function_);
    // Other kinds run their own loop, written in Python: target(fd) never returns.
    PyObject* result = PyObject_CallFunction(invoke_, "i", socket);
    if (result == nullptr) PyErr_Print();
    _exit(1);
  }

  // coil.after_restore hooks, in a new instance; it exits if one fails.
  void run_after_restore_hooks() const {
    // Without hooks, no Python runs here: its first touches of the shared
    // pages (each a page copy) would be this instance's cost for nothing.
    if (!has_after_restore_hooks_) return;
    if (!run_hooks("after_restore")) {
      std::string error = take_load_error();
      std::fprintf(stderr, "coil: %s\n", error.c_str());
      _exit(1);
    }
  }

  // In a fresh child: close what belongs to the template, die with it, send
  // output to `output`, join the cgroups (first of all, so that their limits
  // hold from the start).
  void enter_child(int output, const std::string& title, std::vector<unique_fd>& cgroup_fds) {
    ::close(control_);
    ::close(signal_fd_);
    for (auto& [token, standby] : standbys_) {
      standby.channel.reset();
      standby.output.reset();
      standby.cgroup_fds.clear();
    }
    if (!bind_to_parent(template_pid_, title + function_) || !redirect_output(output)) _exit(1);
    for (unique_fd& fd : cgroup_fds) {
      if (::write(fd.get(), "0", 1) != 1) {
        std::fprintf(stderr, "coil: cannot join the instance's cgroup: %s\n", std::strerror(errno));
        _exit(1);
      }
      fd.reset();
    }
    if (Status s = sandbox::enter_instance(); !s) {
      std::fprintf(stderr, "coil: %s\n", s.message().c_str());
      _exit(1);
    }
    if (Status s = sandbox::mount_instance_volumes(mounts_); !s) {
      std::fprintf(stderr, "coil: cannot mount the instance's ephemeral volumes: %s\n", s.message().c_str());
      _exit(1);
    }
  }

  // kRetire: coil stops. Each standby's channel closes: it ends
  // without serving, an ASGI one after its lifespan shutdown (the startup
  // ran ahead, so its shutdown is due as in any instance). Their output,
  // which would have gone to the host with kSpawned, goes out through the
  // template's own.
  void retire() {
    retiring_ = true;
    for (auto& [token, standby] : standbys_) {
      if (standby.pid > 0) {
        ::fcntl(standby.output.get(), F_SETFL, ::fcntl(standby.output.get(), F_GETFL) | O_NONBLOCK);
        retiring_standbys_[standby.pid] = std::move(standby.output);
      }
    }
    standbys_.clear();  // closes their channels
  }

  // Copies what is in a (non-blocking) output pipe to the template's own
  // output, at most a pipe's worth a call: a writer that outpaces the copy
  // cannot keep the template from its loop (poll() comes back for the rest).
  // Returns true at its end (every writer has exited).
  static bool pass_on_output(int fd) {
    char buffer[4096];
    ssize_t n = -1;
    for (size_t copied = 0; copied < 64 * 1024 && (n = ::read(fd, buffer, sizeof buffer)) > 0;) {
      (void)!::write(STDERR_FILENO, buffer, static_cast<size_t>(n));
      copied += static_cast<size_t>(n);
    }
    return n == 0;
  }

  // A standby died before it served (a failing hook or lifespan startup, a
  // crash): its output never reached the host, so the template says it.
  void say_standby_died(Standby& standby, int status) {
    std::string output;
    if (standby.output) {
      int flags = ::fcntl(standby.output.get(), F_GETFL);
      ::fcntl(standby.output.get(), F_SETFL, flags | O_NONBLOCK);
      char buffer[4096];
      ssize_t n;
      while (output.size() < 4096 && (n = ::read(standby.output.get(), buffer, sizeof buffer)) > 0) {
        output.append(buffer, static_cast<size_t>(n));
      }
    }
    std::string how = WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                          : "status " + std::to_string(WEXITSTATUS(status));
    std::fprintf(stderr, "coil: a standby of %s exited before it served (%s); the next instance is forked%s%s\n",
                 function_.c_str(), how.c_str(), output.empty() ? "" : ". It wrote: ", output.c_str());
  }

  void prepare(control::Message& request) {
    // Whatever happens, the token keeps its cgroups: a kSpawn for it that
    // finds no standby forks an instance into them instead.
    Standby& kept = standbys_[request.token];
    kept.cgroup_fds = std::move(request.fds);
    if (fresh_ != nullptr) return;  // a template with threads does not fork: no standbys
    int output[2];
    int channel[2];
    if (::pipe2(output, O_CLOEXEC) != 0) return;
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0) {
      ::close(output[0]);
      ::close(output[1]);
      return;
    }
    Standby standby;
    request.fds = std::move(kept.cgroup_fds);
    standbys_.erase(request.token);
    standby.output.reset(output[0]);
    standby.channel.reset(channel[0]);
    standby.cgroup_fds = std::move(request.fds);
    // A snapshot costs a read of the standby's page map: the first standbys
    // take one, then one in kSnapshotEvery (a burst of standbys must not all
    // pay it); with hints, a snapshot after the prefault finds what they miss.
    bool snapshot = snapshots_ < 2 || standbys_forked_ % kSnapshotEvery == 0;
    if (snapshot) ++snapshots_;
    ++standbys_forked_;
    pid_t pid = fork_python();
    if (pid == 0) {
      ::close(channel[0]);
      ::close(output[0]);
      enter_child(output[1], "coil-s:", standby.cgroup_fds);
      // Everything an instance does before it needs its socket, done ahead:
      // the after_restore hooks, and an ASGI app's event loop and lifespan
      // startup. (A hook that fails ends the standby; the spawn then forks,
      // and the failure shows there.)
      reset_signals(changed_signals_);
      run_after_restore_hooks();
      if (kind_ == "asgi") prepare_ahead(invoke_);
      // The first request's copy-on-write faults, ahead of need when an
      // earlier instance said where they fall; else this one may say.
      if (!page_hints_.empty()) page_hints::prefault(page_hints_);
      if (snapshot) page_hints::take_snapshot();
      control::Message go;
      if (!control::receive(channel[1], go) || go.fds.empty()) {
        // coil stops (kRetire); were the template gone, this process would
        // have died with it.
        if (kind_ == "asgi") retire_prepared(invoke_);
        _exit(0);
      }
      ::close(channel[1]);
      ::prctl(PR_SET_NAME, ("coil-i:" + function_).substr(0, 15).c_str());
      become_instance(go.fds[0].release(), /*prepared=*/true);
    }
    ::close(output[1]);
    ::close(channel[1]);
    if (pid > 0) standby.pid = pid;  // else kSpawn for this token forks instead
    standbys_[request.token] = std::move(standby);
  }

  void spawn(control::Message& request) {
    if (request.fds.empty()) {
      std::fprintf(stderr, "coil: spawn request without an instance socket\n");
      return;
    }
    if (auto it = standbys_.find(request.token); it != standbys_.end()) {
      Standby standby = std::move(it->second);
      standbys_.erase(it);
      if (standby.pid > 0) {
        control::Message go;
        go.type = control::Type::kSpawn;
        go.token = request.token;
        go.fds.push_back(std::move(request.fds[0]));
        if (control::send(standby.channel.get(), go)) {
          report_spawned(request.token, standby.pid, std::move(standby.output));
          return;
        }
        ::kill(standby.pid, SIGKILL);
        request.fds[0] = std::move(go.fds[0]);  // the socket goes to the fallback fork
      }
      // The standby is gone: fork instead, with the cgroups it was given.
      request.fds.resize(1);
      for (unique_fd& fd : standby.cgroup_fds) request.fds.push_back(std::move(fd));
    }
    fork_instance(request);
  }

  void fork_instance(control::Message& request) {
    int output[2];
    if (::pipe2(output, O_CLOEXEC) != 0) {
      std::fprintf(stderr, "coil: pipe2: %s\n", std::strerror(errno));
      return;  // the host sees no kSpawned and an instance socket that closes
    }
    pid_t pid = fresh_ != nullptr ? start_fresh_instance(*fresh_, request, output[1]) : fork_python();
    if (pid < 0) {
      std::fprintf(stderr, "coil: fork: %s\n", std::strerror(errno));
      ::close(output[0]);
      ::close(output[1]);
      return;
    }
    if (pid == 0) {
      ::close(output[0]);
      std::vector<unique_fd> cgroup_fds;
      for (size_t i = 1; i < request.fds.size(); ++i) cgroup_fds.push_back(std::move(request.fds[i]));
      enter_child(output[1], "coil-i:", cgroup_fds);
      become_instance(request.fds[0].release());
    }
    ::close(output[1]);
    request.fds.clear();  // closes the template's copy of the instance socket
    report_spawned(request.token, pid, unique_fd(output[0]));
  }

  void report_spawned(uint32_t token, pid_t pid, unique_fd output) {
    instances_.insert(pid);
    control::Message spawned;
    spawned.type = control::Type::kSpawned;
    spawned.token = token;
    spawned.pid = static_cast<uint32_t>(pid);
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    spawned.fds.emplace_back(pidfd);
    spawned.fds.push_back(std::move(output));
    if (pidfd < 0 || !control::send(control_, spawned)) {
      ::kill(pid, SIGKILL);  // the host cannot supervise it: do not leave it running
    }
  }

  int control_;
  int signal_fd_;
  PyObject* invoke_;
  std::string function_;
  std::string kind_;
  const FreshStart* fresh_;
  std::string page_hints_;  // from the host (kPageHints): pages each standby copies ahead
  static constexpr uint64_t kSnapshotEvery = 32;
  uint64_t snapshots_ = 0;        // standbys told to take a page snapshot
  uint64_t standbys_forked_ = 0;
  std::vector<sandbox::InstanceMount> mounts_;  // ephemeral volumes, mounted by each instance
  pid_t template_pid_ = ::getpid();
  // Taken when the template starts serving, after all of its Python ran
  // (hooks are registered at import or by before_snapshot hooks).
  std::vector<int> changed_signals_ = signals_not_default();
  bool has_after_restore_hooks_ = after_restore_hooks_registered();
  std::set<pid_t> instances_;
  std::map<uint32_t, Standby> standbys_;
  bool retiring_ = false;                        // kRetire came
  std::map<pid_t, unique_fd> retiring_standbys_;  // standbys ending, with their output pipes
};

// The template's loop: serve the host's requests, report exits.
[[noreturn]] void serve_template(int control, PyObject* invoke, const std::string& function,
                                 const std::string& kind, const FreshStart* fresh,
                                 std::vector<sandbox::InstanceMount> mounts) {
  sigset_t child_signals;
  sigemptyset(&child_signals);
  sigaddset(&child_signals, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &child_signals, nullptr);
  int signal_fd = ::signalfd(-1, &child_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) fail("signalfd");
  TemplateServer server(control, signal_fd, invoke, function, kind, fresh, std::move(mounts));

  for (;;) {
    std::vector<pollfd> fds = {{control, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    for (int output : server.retiring_outputs()) fds.push_back({output, POLLIN, 0});
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = ::poll(fds.data(), fds.size(), -1);
    Py_END_ALLOW_THREADS
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("poll");
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents != 0) server.pass_on_retiring_output(fds[i].fd);
    }
    if (fds[1].revents & POLLIN) server.report_exits();
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      control::Message request;
      Status s = control::receive(control, request);
      if (!s) _exit(0);  // the host is gone or stopped this function: instances die with us
      server.on_request(request);
    }
    if (server.retired()) _exit(0);
  }
}

// The sandbox of one template, from its kBuildTemplate.
struct TemplateSandbox {
  bool enabled = true;
  sandbox::SandboxPlan plan;
  std::string dependencies;  // host path, "" = none
};

constexpr const char* kDependenciesMount = "/deps";

sandbox::VolumeMount::Kind mount_kind(control::Volume::Kind kind) {
  switch (kind) {
    case control::Volume::Kind::kEphemeral: return sandbox::VolumeMount::Kind::kEphemeral;
    case control::Volume::Kind::kPersistent: return sandbox::VolumeMount::Kind::kPersistent;
    case control::Volume::Kind::kReadonly: break;
  }
  return sandbox::VolumeMount::Kind::kReadonly;
}

TemplateSandbox sandbox_of(const control::BuildTemplate& spec) {
  TemplateSandbox sandbox;
  sandbox.enabled = spec.isolation != control::Isolation::kNone;
  sandbox.plan.namespaces = spec.isolation == control::Isolation::kFull ||
                            spec.isolation == control::Isolation::kNamespacesWithoutUserns;
  sandbox.plan.user_namespace = spec.isolation == control::Isolation::kFull;
  sandbox.plan.mounts.code_dir = spec.source;
  sandbox.plan.mounts.tmp_mb = spec.tmp_mb;
  sandbox.plan.limits.max_open_files = spec.max_open_files;
  sandbox.plan.limits.data_bytes = spec.rlimit_data_mb << 20;
  for (const control::Volume& volume : spec.volumes) {
    sandbox.plan.mounts.volumes.push_back({mount_kind(volume.kind), volume.mount, volume.host_path, volume.size_mib});
  }
  if (!spec.dependencies.empty()) {
    sandbox.dependencies = spec.dependencies;
    sandbox.plan.mounts.volumes.push_back(
        {sandbox::VolumeMount::Kind::kReadonly, kDependenciesMount, spec.dependencies, 0});
  }
  return sandbox;
}

// This process's pid as the host sees it: /proc is still the host's until
// the sandbox mounts its own.
uint32_t host_pid() {
  char link[32];
  ssize_t n = ::readlink("/proc/self", link, sizeof(link) - 1);
  if (n <= 0) return static_cast<uint32_t>(::getpid());
  link[n] = '\0';
  return static_cast<uint32_t>(std::strtoul(link, nullptr, 10));
}

// The ephemeral volumes each instance mounts for itself (sandbox/instance_mounts.h).
std::vector<sandbox::InstanceMount> instance_mounts(const TemplateSandbox& sandbox) {
  std::vector<sandbox::InstanceMount> mounts;
  if (!sandbox.plan.namespaces) return mounts;
  for (const sandbox::VolumeMount& volume : sandbox.plan.mounts.volumes) {
    if (volume.kind == sandbox::VolumeMount::Kind::kEphemeral) mounts.push_back({volume.mount, volume.size_mib});
  }
  return mounts;
}

// Reports a template's failure to the host on its control socket, and exits.
[[noreturn]] void fail_template(int control, const std::string& message) {
  control::Message failed;
  failed.type = control::Type::kTemplateFailed;
  failed.message = message;
  (void)control::send(control, failed);
  _exit(1);
}

// The fds a template's interpreter finds after its exec (exec_template_interpreter).
constexpr int kTemplateControlFd = 3;  // the template's control socket
constexpr int kTemplateSpecFd = 5;     // its kBuildTemplate and host pid, read once

// Starts the function's own interpreter in this process: execve of
// python3.11 with coil-python.so's `__template` (run_fresh_template), which
// goes on where this left off. Why not go on in the zygote's interpreter, as
// a fork: every process forked from one interpreter shares what it fixed at
// its start, the address layout of its libraries, heap and stack, and its
// str hash secret. A template of its own gives each function its own, so
// that one function's code learns nothing of another's memory layout or
// hashes. The exec keeps the sandbox (namespaces, root, uid, seccomp,
// no_new_privs, rlimits, cgroups); its spec travels through a socket pair.
[[noreturn]] void exec_template_interpreter(int control, int runtime_module, const control::Message& build,
                                           uint32_t host_pid) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    fail_template(control, std::string("socketpair: ") + std::strerror(errno));
  }
  control::Message spec;
  spec.type = control::Type::kBuildTemplate;
  spec.build = build.build;
  // And this process's host pid, which /proc no longer shows inside the
  // sandbox (not in argv: every instance's /proc/self/cmdline would show it).
  control::Message started;
  started.type = control::Type::kTemplateStarted;
  started.pid = host_pid;
  Status sent = control::send(pair[0], spec);
  if (sent) sent = control::send(pair[0], started);
  if (!sent) fail_template(control, "passing the spec on: " + sent.message());
  ::close(pair[0]);
  // The zygote's environment, with LD_BIND_NOW for the loader (as the host
  // starts the zygote: every symbol bound here, once, rather than in each
  // instance; main.cc removes it from the environment at once).
  ExecLine exec({"__template"}, {"LD_BIND_NOW=1"});
  // Out of the way first (a wanted fd may sit on 3, 4 or 5), then into place;
  // just above them, since max_open_files (RLIMIT_NOFILE, set by now) may be
  // as low as 16.
  int moved_control = ::fcntl(control, F_DUPFD_CLOEXEC, kTemplateSpecFd + 1);
  int moved_module = ::fcntl(runtime_module, F_DUPFD_CLOEXEC, kTemplateSpecFd + 1);
  int moved_spec = ::fcntl(pair[1], F_DUPFD_CLOEXEC, kTemplateSpecFd + 1);
  if (moved_control < 0 || moved_module < 0 || moved_spec < 0) {
    fail_template(control, std::string("moving fds for the exec: ") + std::strerror(errno));
  }
  // From here `control` may have been replaced; moved_control is its copy.
  if (::dup2(moved_control, kTemplateControlFd) < 0 || ::dup2(moved_module, kRuntimeModuleFd) < 0 ||
      ::dup2(moved_spec, kTemplateSpecFd) < 0 || ::close_range(kTemplateSpecFd + 1, ~0U, 0) != 0) {
    fail_template(moved_control, std::string("moving fds for the exec: ") + std::strerror(errno));
  }
  ::execve("/proc/self/exe", exec.argv.data(), exec.envp.data());
  fail_template(kTemplateControlFd, std::string("execve of the template's interpreter: ") + std::strerror(errno));
}

// Runs in the freshly forked (or cloned) template: bind it to the zygote,
// isolate it, enter the function's directory, then exec its own interpreter
// (exec_template_interpreter), which imports the code.
//
// runtime_module: the zygote's copy of coil-python.so (run_zygote), which
// the interpreter is loaded from.
[[noreturn]] void build_template(pid_t zygote_pid, int zygote_control, int runtime_module, control::Message& build,
                                 const TemplateSandbox& sandbox) {
  const control::BuildTemplate& spec = build.build;
  int control = build.fds[0].release();
  int output = build.fds[1].release();
  for (size_t i = 2; i < build.fds.size(); ++i) build.fds[i].reset();  // cgroup files: not for function code
  ::close(zygote_control);
  // A template in its own pid namespace sees its parent as pid 0.
  pid_t expected_parent = sandbox.plan.namespaces ? 0 : zygote_pid;
  if (!bind_to_parent(expected_parent, "coil-t:" + spec.function) || !redirect_output(output)) _exit(1);
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &action, nullptr);

  control::Message started;
  started.type = control::Type::kTemplateStarted;
  started.pid = host_pid();
  if (!control::send(control, started)) _exit(1);

  // Isolation comes before the function's code runs, and is inherited by
  // every instance forked from here.
  std::string code_dir = spec.source;
  if (sandbox.enabled) {
    if (Status s = sandbox::contain(sandbox.plan); !s) fail_template(control, "sandbox: " + s.message());
    if (sandbox.plan.namespaces) code_dir = sandbox::kCodeMount;
  }
  // Instances of a function with ephemeral volumes make their own mount
  // namespace; where the kernel refuses that (no unprivileged user
  // namespaces), say so now rather than fail every instance later.
  if (std::vector<sandbox::InstanceMount> mounts = instance_mounts(sandbox); !mounts.empty()) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail_template(control, std::string("pipe2: ") + std::strerror(errno));
    pid_t probe = ::fork();
    if (probe == 0) {
      Status s = sandbox::enter_instance();
      if (s) s = sandbox::mount_instance_volumes(mounts);
      const std::string& message = s.message();
      (void)!::write(pipe_fds[1], message.data(), message.size());
      _exit(s ? 0 : 1);
    }
    ::close(pipe_fds[1]);
    char buffer[512];
    ssize_t n = probe > 0 ? ::read(pipe_fds[0], buffer, sizeof(buffer)) : -1;
    ::close(pipe_fds[0]);
    int status = 1;
    if (probe > 0) ::waitpid(probe, &status, 0);
    if (probe < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fail_template(control, "ephemeral volumes: an instance cannot make its own mount namespace here: " +
                                 (n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string("the probe failed")));
    }
  }
  if (::chdir(code_dir.c_str()) != 0) {
    fail_template(control, "cannot enter " + code_dir + ": " + std::strerror(errno));
  }
  exec_template_interpreter(control, runtime_module, build, started.pid);
}

// The template's own interpreter, after exec_template_interpreter: import
// the function's code once, freeze the heap, report, then serve spawn
// requests.
[[noreturn]] void finish_template(int control, int runtime_module, const control::BuildTemplate& spec,
                                  const TemplateSandbox& sandbox, uint32_t host_pid) {
  auto report_failure = [&](const std::string& message) { fail_template(control, message); };
  std::string code_dir = sandbox.enabled && sandbox.plan.namespaces ? std::string(sandbox::kCodeMount) : spec.source;
  // The function's environment and import path, through Python so that
  // os.environ and the C environment agree.
  PyObject* os_environ = import_attr("os", "environ");
  PyObject* sys_path = PySys_GetObject("path");  // borrowed
  PyObject* source = PyUnicode_FromString(code_dir.c_str());
  if (os_environ == nullptr || sys_path == nullptr || source == nullptr ||
      PyList_Insert(sys_path, 0, source) != 0) {
    report_failure(take_exception_summary());
  }
  Py_DECREF(source);
  if (!sandbox.dependencies.empty()) {
    // After the code, before the system's packages: what requirements.txt
    // pins wins over Debian's python3-* of the runtime.
    PyObject* dependencies =
        PyUnicode_FromString(sandbox.plan.namespaces ? kDependenciesMount : sandbox.dependencies.c_str());
    if (dependencies == nullptr || PyList_Insert(sys_path, 1, dependencies) != 0) {
      report_failure(take_exception_summary());
    }
    Py_DECREF(dependencies);
  }
  for (const auto& [key, value] : spec.environment) {
    PyObject* k = PyUnicode_FromString(key.c_str());
    PyObject* v = PyUnicode_FromString(value.c_str());
    if (k == nullptr || v == nullptr || PyObject_SetItem(os_environ, k, v) != 0) {
      report_failure("environment " + key + ": " + take_exception_summary());
    }
    Py_DECREF(k);
    Py_DECREF(v);
  }
  Py_DECREF(os_environ);

  uint64_t import_started = now_us();
  PyObject* load = import_attr("coil._runtime", "load");
  PyObject* options = PyDict_New();
  PyObject* function_name = PyUnicode_FromString(spec.function.c_str());
  if (options == nullptr || function_name == nullptr || PyDict_SetItemString(options, "function", function_name) != 0) {
    report_failure(take_exception_summary());
  }
  Py_DECREF(function_name);
  std::vector<std::pair<const char*, std::string>> load_options = {{"kind", spec.kind}};
  if (!spec.root_path_in_path.empty()) load_options.emplace_back("root_path_in_path", spec.root_path_in_path);
  if (!spec.served_under_prefix) load_options.emplace_back("served_under_prefix", "false");
  for (const auto& [key, value] : load_options) {
    PyObject* v = PyUnicode_FromString(value.c_str());
    if (v == nullptr || PyDict_SetItemString(options, key, v) != 0) report_failure(take_exception_summary());
    Py_DECREF(v);
  }
  PyObject* loaded = load ? PyObject_CallFunction(load, "sO", spec.entrypoint.c_str(), options) : nullptr;
  Py_DECREF(options);
  if (loaded == nullptr) report_failure(take_load_error());
  PyObject* kind = PyTuple_GetItem(loaded, 0);
  PyObject* invoke = PyTuple_GetItem(loaded, 1);
  if (kind == nullptr || invoke == nullptr) report_failure(take_exception_summary());
  Py_INCREF(invoke);
  std::string kind_name = PyUnicode_AsUTF8(kind);
  Py_DECREF(loaded);
  Py_DECREF(load);
  uint64_t import_us = now_us() - import_started;
  if (kind_name == "asgi") {
    // uvloop, when installed, and asyncio's first-use work, once here for
    // every instance (coil._asgi.warm_up; no live loop is forked).
    PyObject* warm_up = import_attr("coil._asgi", "warm_up");
    PyObject* warmed = warm_up ? PyObject_CallNoArgs(warm_up) : nullptr;
    if (warmed == nullptr) report_failure("cannot prepare asyncio: " + take_exception_summary());
    Py_DECREF(warmed);
    Py_DECREF(warm_up);
  }
  if (!run_hooks("before_snapshot")) report_failure(take_load_error());
  std::string threads = extra_threads();

  // Everything imported so far is shared with every instance: move it out of
  // the collector's reach so that collections in instances do not write to
  // (and so copy) the shared pages.
  PyObject* gc = PyImport_ImportModule("gc");
  PyObject* collected = gc ? PyObject_CallMethod(gc, "collect", nullptr) : nullptr;
  PyObject* frozen = collected ? PyObject_CallMethod(gc, "freeze", nullptr) : nullptr;
  if (frozen == nullptr) report_failure("gc.freeze: " + take_exception_summary());
  Py_DECREF(frozen);
  Py_DECREF(collected);
  Py_DECREF(gc);

  control::Message ready;
  ready.type = control::Type::kTemplateReady;
  ready.ready.pid = host_pid;
  ready.ready.import_us = import_us;
  ready.ready.kind = kind_name;
  ready.ready.threads = threads;
  if (!control::send(control, ready)) _exit(1);
  // A fork copies only the calling thread: a template whose import started
  // threads would hand its instances locks held by threads that do not exist
  // there. Such a template starts each instance as a fresh process instead.
  std::unique_ptr<FreshStart> fresh;
  std::vector<sandbox::InstanceMount> mounts = instance_mounts(sandbox);
  if (threads.empty()) {
    ::close(runtime_module);
  } else {
    fresh = std::make_unique<FreshStart>(runtime_module, spec, kind_name, mounts);
  }
  serve_template(control, invoke, spec.function, kind_name, fresh.get(), std::move(mounts));
}

// The zygote's handles on the host's namespaces must not reach function code.
void close_host_namespaces(const sandbox::HostNamespaces& own) {
  ::close(own.mount);
  ::close(own.net);
}

// Forks (or clones into fresh namespaces) the template of a kBuildTemplate.
// A sandboxed template waits until the zygote has written its id maps and
// assembled its root, then goes on by itself.
void start_template(pid_t self, int control_fd, int runtime_module, const sandbox::HostNamespaces& own,
                    control::Message& message) {
  TemplateSandbox sandbox = sandbox_of(message.build);
  auto report_failure = [&](const std::string& what) {
    control::Message failed;
    failed.type = control::Type::kTemplateFailed;
    failed.message = "sandbox: " + what;
    (void)control::send(message.fds[0].get(), failed);
  };
  if (!sandbox.plan.namespaces) {
    pid_t pid = fork_python();
    if (pid == 0) {
      close_host_namespaces(own);
      build_template(self, control_fd, runtime_module, message, sandbox);
    }
    if (pid < 0) report_failure(std::string("fork: ") + std::strerror(errno));
    return;
  }
  int release[2];
  if (::pipe2(release, O_CLOEXEC) != 0) {
    report_failure(std::string("pipe2: ") + std::strerror(errno));
    return;
  }
  int child_pidfd = -1;
  pid_t pid = clone_python(sandbox::namespace_clone_flags(sandbox.plan.user_namespace), &child_pidfd);
  if (pid == 0) {
    ::close(release[1]);
    // If the zygote dies before the release, the read sees end of file.
    char go = 0;
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::read(release[0], &go, 1) != 1 || go != 'g') _exit(1);
    ::close(release[0]);
    close_host_namespaces(own);
    build_template(self, control_fd, runtime_module, message, sandbox);
  }
  ::close(release[0]);
  unique_fd release_fd(release[1]);
  unique_fd pidfd(child_pidfd);
  const sandbox::ChildRef child{pid, child_pidfd};
  if (pid < 0) {
    report_failure(std::string("clone into new namespaces: ") + std::strerror(errno));
    return;
  }
  // Into the function's cgroups before it runs anything (fds 2.. of the
  // request, if the host has cgroups); its instances are forked there.
  for (size_t i = 2; i < message.fds.size(); ++i) {
    std::string text = std::to_string(pid);
    if (::write(message.fds[i].get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      ::kill(pid, SIGKILL);
      report_failure(std::string("cannot put the template in its cgroup: ") + std::strerror(errno));
      return;
    }
  }
  Result<unique_fd> listener = sandbox::prepare_sandbox(child, sandbox.plan, own);
  if (!listener) {
    ::kill(pid, SIGKILL);
    report_failure(listener.message());
    return;
  }
  // Before the release, so that the host serves the proxy before any of the
  // function's code can try to reach it.
  control::Message outbound;
  outbound.type = control::Type::kOutboundListener;
  outbound.fds.push_back(std::move(*listener));
  if (!control::send(message.fds[0].get(), outbound)) {
    ::kill(pid, SIGKILL);
    return;
  }
  char go = 'g';
  if (::write(release_fd.get(), &go, 1) != 1) ::kill(pid, SIGKILL);
}

}  // namespace

[[noreturn]] void run_fresh_template() {
  // Not dumpable again before anything else: the exec made it so, and
  // instances run as the same uid (sandbox/namespaces.h). The interpreter's
  // start ran before this can (tens of ms): no instance exists yet, and in
  // a full sandbox the template is alone in its pid namespace.
  if (::prctl(PR_SET_DUMPABLE, 0) != 0) fail_template(kTemplateControlFd, "prctl(PR_SET_DUMPABLE)");
  // The exec's dup2 cleared close-on-exec: a program that the function's
  // code starts must not hold the control socket (the host learns of the
  // template's end from its EOF) or coil-python.so.
  if (::fcntl(kTemplateControlFd, F_SETFD, FD_CLOEXEC) != 0 || ::fcntl(kRuntimeModuleFd, F_SETFD, FD_CLOEXEC) != 0) {
    fail_template(kTemplateControlFd, std::string("fcntl(FD_CLOEXEC): ") + std::strerror(errno));
  }
  control::Message build, started;
  Status s = control::receive(kTemplateSpecFd, build);
  if (s && build.type == control::Type::kBuildTemplate) s = control::receive(kTemplateSpecFd, started);
  if (!s || build.type != control::Type::kBuildTemplate || started.type != control::Type::kTemplateStarted) {
    fail_template(kTemplateControlFd, "reading the template's spec after its exec: " + s.message());
  }
  ::close(kTemplateSpecFd);
  ::prctl(PR_SET_NAME, ("coil-t:" + build.build.function).substr(0, 15).c_str());
  finish_template(kTemplateControlFd, kRuntimeModuleFd, build.build, sandbox_of(build.build), started.pid);
}

[[noreturn]] void run_fresh_instance(const std::vector<std::string>& command) {
  // fd 3: the instance socket; fds 1 and 2: the output pipe; fd 4: the
  // runtime module, loaded by now (set up by start_fresh_instance). The
  // sandbox came with the exec.
  ::close(kRuntimeModuleFd);
  // The exec's dup2 cleared close-on-exec: a program the function's code
  // starts must not hold the instance socket (as in a forked instance, whose
  // socket came close-on-exec).
  ::fcntl(3, F_SETFD, FD_CLOEXEC);
  const std::string& function = command[1];
  const std::string& entrypoint = command[2];
  auto die = [&](const std::string& message) {
    std::fprintf(stderr, "coil: instance of %s: %s\n", function.c_str(), message.c_str());
    _exit(1);
  };
  std::vector<sandbox::InstanceMount> mounts;
  for (size_t i = 3; i < command.size(); ++i) {
    const std::string& option = command[i];
    if (option.rfind("volume=", 0) != 0) continue;
    auto colon = option.rfind(':');
    mounts.push_back({option.substr(7, colon - 7), std::strtoull(option.c_str() + colon + 1, nullptr, 10)});
  }
  if (Status s = sandbox::mount_instance_volumes(mounts); !s) die("ephemeral volumes: " + s.message());
  // The exec reset caught signals but kept ignored ones (the mask was
  // cleared before it): the same dispositions as a forked instance's.
  reset_signals(signals_not_default());
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) die(std::string("getcwd: ") + std::strerror(errno));
  PyObject* sys_path = PySys_GetObject("path");  // borrowed
  PyObject* code_dir = PyUnicode_FromString(cwd);
  if (sys_path == nullptr || code_dir == nullptr || PyList_Insert(sys_path, 0, code_dir) != 0) {
    die(take_exception_summary());
  }
  Py_DECREF(code_dir);
  PyObject* options = PyDict_New();
  PyObject* name = PyUnicode_FromString(function.c_str());
  if (options == nullptr || name == nullptr || PyDict_SetItemString(options, "function", name) != 0) {
    die(take_exception_summary());
  }
  Py_DECREF(name);
  for (size_t i = 3; i < command.size(); ++i) {
    const std::string& option = command[i];
    auto equals = option.find('=');
    if (equals == std::string::npos || option.rfind("volume=", 0) == 0) continue;
    PyObject* value = PyUnicode_FromString(option.substr(equals + 1).c_str());
    if (value == nullptr || PyDict_SetItemString(options, option.substr(0, equals).c_str(), value) != 0) {
      die(take_exception_summary());
    }
    Py_DECREF(value);
  }
  PyObject* load = import_attr("coil._runtime", "load");
  PyObject* loaded = load ? PyObject_CallFunction(load, "sO", entrypoint.c_str(), options) : nullptr;
  if (loaded == nullptr) die(take_load_error());
  // Both hook lists: this process is its own template.
  if (!run_hooks("before_snapshot") || !run_hooks("after_restore")) die(take_load_error());
  PyObject* kind = PyTuple_GetItem(loaded, 0);
  PyObject* invoke = PyTuple_GetItem(loaded, 1);
  if (kind == nullptr || invoke == nullptr) die(take_exception_summary());
  Py_INCREF(invoke);
  if (std::string(PyUnicode_AsUTF8(kind)) == "handler") run_handler_instance(3, invoke, function);
  PyObject* result = PyObject_CallFunction(invoke, "i", 3);
  if (result == nullptr) PyErr_Print();
  _exit(1);
}

int run_zygote(int control_fd, int runtime_module) {
  ::prctl(PR_SET_NAME, "coil-zygote");
  // Templates are reaped automatically; the host learns of their end when
  // their control socket closes.
  struct sigaction action {};
  action.sa_handler = SIG_IGN;
  ::sigaction(SIGCHLD, &action, nullptr);

  // Every template execs its own interpreter from it (exec_template_interpreter);
  // the exec's dup2 is what passes it on.
  if (::fcntl(runtime_module, F_SETFD, FD_CLOEXEC) != 0) fail("fcntl on coil-python.so's fd");
  // Nothing of Python is imported here beyond the interpreter's start: the
  // templates run interpreters of their own.

  // The zygote enters each new sandbox's mount namespace to assemble its
  // root (sandbox/contain.h), and comes back through this.
  unique_fd own_mount_ns(::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC));
  unique_fd own_net_ns(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own_mount_ns || !own_net_ns) {
    std::fprintf(stderr, "coil: zygote: open /proc/self/ns: %s\n", std::strerror(errno));
    return 1;
  }
  const sandbox::HostNamespaces own{own_mount_ns.get(), own_net_ns.get()};
  pid_t self = ::getpid();
  for (;;) {
    control::Message message;
    Status s;
    Py_BEGIN_ALLOW_THREADS
    s = control::receive(control_fd, message);
    Py_END_ALLOW_THREADS
    if (!s) return s.message().empty() ? 0 : 1;  // host closed the channel: done
    if (message.type != control::Type::kBuildTemplate || message.fds.size() < 2) {
      std::fprintf(stderr, "coil: zygote: unexpected control message\n");
      continue;
    }
    start_template(self, control_fd, runtime_module, own, message);
    // The parent's copies of the template's fds close with `message`.
  }
}

}  // namespace coil::python
