#include "runtime/zygote_process.h"

#include <fcntl.h>
#include <link.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "python/command_line.h"
#include "sandbox/contain.h"
#include "sandbox/namespaces.h"

namespace coil::runtime {
namespace {

control::Isolation isolation_of(SandboxMode mode) {
  switch (mode) {
    case SandboxMode::kOff: return control::Isolation::kNone;
    case SandboxMode::kSeccompOnly: return control::Isolation::kSeccompOnly;
    case SandboxMode::kNamespacesNoUserns: return control::Isolation::kNamespacesWithoutUserns;
    case SandboxMode::kFull: break;
  }
  return control::Isolation::kFull;
}

Status socket_pair(int type, unique_fd& a, unique_fd& b) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) {
    return Status::error(std::string("socketpair: ") + std::strerror(errno));
  }
  a.reset(fds[0]);
  b.reset(fds[1]);
  return Status::ok();
}

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U  // Linux 6.3 (glibc 2.36's headers predate it)
#endif

// coil-python.so (src/python/main.cc), installed next to the running coil
// binary, as the zygote gets it (python/command_line.h): a copy in a memfd
// (close-on-exec), sealed so that no process holding it can change it, and
// not executable where the kernel allows saying so (6.3+, and required under
// vm.memfd_noexec = 2): it is mapped by dlopen, never exec'd. Where memfds
// are refused, the file itself, read-only. Also checks that python3.11,
// which loads it, can be run.
Result<unique_fd> open_runtime_module() {
  std::error_code error;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return Status::error("cannot find the coil binary (/proc/self/exe): " + error.message());
  std::string path = (self.parent_path() / "coil-python.so").string();
  unique_fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) {
    return Status::error("coil-python.so, coil's runtime for Python, is missing next to the coil binary (" + path +
                         ": " + std::strerror(errno) + "); it is built and installed with coil");
  }
  if (::access(python::kPythonProgram, X_OK) != 0) {
    return Status::error(std::string("Debian's Python 3.11, which runs functions, cannot be run (") +
                         python::kPythonProgram + ": " + std::strerror(errno) +
                         "); install the python3.11 package (scripts/setup does)");
  }
  unique_fd copy(::memfd_create("coil-python.so", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL));
  if (!copy && errno == EINVAL) copy.reset(::memfd_create("coil-python.so", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!copy) return file;
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) return Status::error("cannot stat " + path + ": " + std::strerror(errno));
  for (off_t copied = 0; copied < st.st_size;) {
    ssize_t n = ::sendfile(copy.get(), file.get(), nullptr, static_cast<size_t>(st.st_size - copied));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::error("cannot copy " + path + ": " + (n < 0 ? std::strerror(errno) : "file shrank"));
    copied += n;
  }
  if (::fcntl(copy.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0) {
    return Status::error(std::string("cannot seal the copy of coil-python.so: ") + std::strerror(errno));
  }
  return copy;
}

// The sanitizer runtimes this coil runs with, as an LD_PRELOAD value: ""
// unless this is a sanitizer build (-DCOIL_SANITIZE=ON). Such a build's
// coil-python.so is instrumented too, and python3.11, which is not, must
// load ASan's runtime before anything else to run it.
std::string sanitizer_runtimes() {
#if defined(__SANITIZE_ADDRESS__)
  std::string found;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        std::string_view name = info->dlpi_name != nullptr ? info->dlpi_name : "";
        if (name.find("/libasan.so") != std::string_view::npos || name.find("/libubsan.so") != std::string_view::npos) {
          auto& list = *static_cast<std::string*>(out);
          if (!list.empty()) list += ':';
          list += name;
        }
        return 0;
      },
      &found);
  return found;
#else
  return "";
#endif
}

}  // namespace

SandboxMode best_sandbox_mode() {
  if (::geteuid() != 0) return SandboxMode::kSeccompOnly;
  return sandbox::user_namespaces_available() ? SandboxMode::kFull : SandboxMode::kNamespacesNoUserns;
}

std::string describe(SandboxMode mode) {
  const std::string rest =
      "pid, net (loopback only), ipc and uts namespaces; a read-only root (pivot_root); an unprivileged uid "
      "without capabilities; no_new_privs; the seccomp filter; rlimits; cgroups per instance";
  switch (mode) {
    case SandboxMode::kFull:
      return "sandbox: every layer is active: user (uid " + std::to_string(sandbox::kFunctionUid) + ", host uid " +
             std::to_string(sandbox::kHostFunctionUid) + "), mount, " + rest;
    case SandboxMode::kNamespacesNoUserns:
      return "WARNING: sandbox: no user namespaces on this kernel; function code runs as host uid " +
             std::to_string(sandbox::kHostFunctionUid) + ". Active: mount, " + rest;
    case SandboxMode::kSeccompOnly:
      return "WARNING: sandbox: not running as root: no namespaces, no cgroups. Active only: the seccomp filter, "
             "no_new_privs and rlimits (memory_mb as RLIMIT_DATA). Run coil as root for the full sandbox";
    case SandboxMode::kOff: break;
  }
  return "WARNING: --no-sandbox: function code runs without any isolation; use it only to debug";
}

Result<std::unique_ptr<ZygoteProcess>> ZygoteProcess::start(boost::asio::io_context& io, SandboxMode sandbox,
                                                            std::string data_dir) {
  unique_fd host_end, zygote_end;
  if (Status s = socket_pair(SOCK_SEQPACKET, host_end, zygote_end); !s) return s;

  Result<unique_fd> module = open_runtime_module();
  if (!module) return module.status();
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls until exec.
  std::vector<std::string> command = python::python_command_line({"__zygote", "3"});
  std::vector<char*> argv;
  for (std::string& arg : command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  static char env_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  static char env_lang[] = "LANG=C.UTF-8";
  static char env_home[] = "HOME=/tmp";
  // Every library's symbols are bound when the zygote starts, once, rather
  // than on a first call in each forked instance (a symbol lookup, and a
  // write that copies a page of the library's GOT). coil-python.so removes
  // the variable at once: nothing it starts sees it.
  static char env_bind_now[] = "LD_BIND_NOW=1";
  std::vector<char*> envp = {env_path, env_lang, env_home, env_bind_now};
  // A sanitizer build (for tests only) runs functions with its sanitizers'
  // runtimes preloaded, and without leak reports, which Python's exit (in a
  // program a function starts) would turn into failures.
  std::string preload = "LD_PRELOAD=" + sanitizer_runtimes();
  static char env_asan_options[] = "ASAN_OPTIONS=detect_leaks=0:disable_coredump=0";
  if (preload != "LD_PRELOAD=") {
    envp.push_back(preload.data());
    envp.push_back(env_asan_options);
  }
  envp.push_back(nullptr);
  pid_t host = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) return Status::error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != host) _exit(127);
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Out of the way first (either may sit on 3 or 4), then into place;
    // dup2 clears CLOEXEC.
    int control = ::fcntl(zygote_end.get(), F_DUPFD, 100);
    int runtime = ::fcntl(module->get(), F_DUPFD, 100);
    if (control < 0 || runtime < 0 || ::dup2(control, 3) < 0 || ::dup2(runtime, python::kRuntimeModuleFd) < 0) {
      _exit(127);
    }
    // Nothing the host inherited reaches function code: stdin is /dev/null,
    // and every fd above the control socket and the module is closed.
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd < 0 || ::dup2(null_fd, 0) < 0) _exit(127);
    if (::close_range(python::kRuntimeModuleFd + 1, ~0U, 0) != 0) _exit(127);
    ::execve(python::kPythonProgram, argv.data(), envp.data());
    _exit(127);
  }
  zygote_end.reset();
  auto channel = std::make_shared<ControlChannel>(io, std::move(host_end));
  channel->start([pid](Status s, control::Message&) {
    if (!s) log::info("zygote (pid {}) exited; no new templates can be built", pid);
  });
  return std::unique_ptr<ZygoteProcess>(new ZygoteProcess(std::move(channel), pid, sandbox, std::move(data_dir)));
}

ZygoteProcess::~ZygoteProcess() { stop(); }

Result<TemplateHandles> ZygoteProcess::build_template(const config::FunctionConfig& function,
                                                     std::vector<unique_fd> cgroup_procs) {
  TemplateHandles handles;
  unique_fd template_end;
  if (Status s = socket_pair(SOCK_SEQPACKET, handles.control, template_end); !s) return s;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Status::error(std::string("pipe2: ") + std::strerror(errno));
  handles.output.reset(pipe_fds[0]);

  control::Message message;
  message.type = control::Type::kBuildTemplate;
  message.build.function = function.name;
  message.build.source = function.source;
  message.build.entrypoint = function.entrypoint;
  if (sandbox_ == SandboxMode::kFull || sandbox_ == SandboxMode::kNamespacesNoUserns) {
    // The only way out of the sandbox's network: the host's outbound proxy
    // (services/outbound_proxy.h). Both spellings: urllib reads the
    // lower-case ones, curl only those for http.
    const std::string proxy = "http://127.0.0.1:" + std::to_string(sandbox::kOutboundProxyPort);
    for (const char* name : {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}) {
      message.build.environment.emplace_back(name, proxy);
    }
  }
  // Numeric libraries start thread pools when imported, and a template with
  // threads cannot fork its instances (python/zygote.cc falls back to fresh
  // processes): one thread each, unless the manifest says otherwise.
  for (const char* name : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"}) {
    message.build.environment.emplace_back(name, "1");
  }
  for (const auto& variable : function.environment) message.build.environment.push_back(variable);
  control::BuildTemplate& build = message.build;
  build.kind = config::kind_name(function.kind);
  if (function.root_path_in_path) build.root_path_in_path = *function.root_path_in_path ? "true" : "false";
  build.served_under_prefix = config::may_see_route_prefix(function);
  build.isolation = isolation_of(sandbox_);
  build.max_open_files = function.max_open_files;
  build.tmp_mb = function.tmp_mb;
  if (cgroup_procs.empty() && sandbox_ != SandboxMode::kOff) {
    // No cgroups: memory_mb falls back to an rlimit (see sandbox/rlimit.h).
    build.rlimit_data_mb = function.memory_mb;
  }
  for (const config::Volume& volume : function.volumes) {
    control::Volume& spec = build.volumes.emplace_back();
    spec.mount = volume.mount;
    switch (volume.kind) {
      case config::Volume::Kind::kReadonly:
        spec.kind = control::Volume::Kind::kReadonly;
        spec.host_path = volume.source;
        break;
      case config::Volume::Kind::kEphemeral:
        spec.kind = control::Volume::Kind::kEphemeral;
        spec.size_mib = volume.size_mib;
        break;
      case config::Volume::Kind::kPersistent: {
        Result<std::string> path = persistent_volume(function.name, volume.name);
        if (!path) return path.status();
        spec.kind = control::Volume::Kind::kPersistent;
        spec.host_path = *path;
        break;
      }
    }
  }
  build.dependencies = function.dependencies;
  message.fds.push_back(std::move(template_end));
  message.fds.emplace_back(pipe_fds[1]);
  for (unique_fd& fd : cgroup_procs) message.fds.push_back(std::move(fd));
  if (Status s = channel_->send(std::move(message)); !s) return Status::error("zygote: " + s.message());
  return handles;
}

Result<std::string> ZygoteProcess::persistent_volume(const std::string& function, const std::string& name) {
  // DATA/volumes/FUNCTION/NAME: the function's user owns the last level only.
  std::string parent = data_dir_ + "/volumes/" + function;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return Status::error("persistent volume " + name + ": cannot create " + parent + ": " + ec.message());
  std::string path = parent + "/" + name;
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::error("persistent volume " + name + ": mkdir " + path + ": " + std::strerror(errno));
  }
  if (sandbox_ == SandboxMode::kFull || sandbox_ == SandboxMode::kNamespacesNoUserns) {
    if (::chown(path.c_str(), sandbox::kHostFunctionUid, sandbox::kHostFunctionUid) != 0) {
      return Status::error("persistent volume " + name + ": chown " + path + ": " + std::strerror(errno));
    }
  }
  return path;
}

void ZygoteProcess::stop() {
  if (pid_ <= 0) return;
  channel_->close();
  // The zygote leads a process group that its templates and instances
  // inherit: one signal ends the whole tree at once, rather than a chain of
  // PR_SET_PDEATHSIG deliveries that completes after we return.
  ::kill(-pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace coil::runtime
