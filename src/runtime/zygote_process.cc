#include "runtime/zygote_process.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace coil::runtime {
namespace {

Status socket_pair(int type, unique_fd& a, unique_fd& b) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) {
    return Status::error(std::string("socketpair: ") + std::strerror(errno));
  }
  a.reset(fds[0]);
  b.reset(fds[1]);
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<ZygoteProcess>> ZygoteProcess::start(boost::asio::io_context& io, bool sandbox) {
  unique_fd host_end, zygote_end;
  if (Status s = socket_pair(SOCK_SEQPACKET, host_end, zygote_end); !s) return s;

  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls until exec.
  static char arg0[] = "coil";
  static char arg1[] = "__zygote";
  static char arg2[] = "3";
  char* argv[] = {arg0, arg1, arg2, nullptr};
  static char env_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  static char env_lang[] = "LANG=C.UTF-8";
  static char env_home[] = "HOME=/tmp";
  char* envp[] = {env_path, env_lang, env_home, nullptr};
  pid_t host = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) return Status::error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != host) _exit(127);
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::dup2(zygote_end.get(), 3) < 0) _exit(127);  // dup2 clears CLOEXEC on fd 3
    // Nothing the host inherited reaches function code: stdin is /dev/null,
    // and every fd above the control socket is closed.
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd < 0 || ::dup2(null_fd, 0) < 0) _exit(127);
    if (::close_range(4, ~0U, 0) != 0) _exit(127);
    ::execve("/proc/self/exe", argv, envp);
    _exit(127);
  }
  zygote_end.reset();
  auto channel = std::make_shared<ControlChannel>(io, std::move(host_end));
  channel->start([pid](Status s, control::Message&) {
    if (!s) log::info("zygote (pid {}) exited; no new templates can be built", pid);
  });
  return std::unique_ptr<ZygoteProcess>(new ZygoteProcess(std::move(channel), pid, sandbox));
}

ZygoteProcess::~ZygoteProcess() { stop(); }

Result<TemplateHandles> ZygoteProcess::build_template(const config::FunctionConfig& function) {
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
  message.build.environment = function.environment;
  message.build.options.emplace_back("kind", config::kind_name(function.kind));
  if (!sandbox_) message.build.options.emplace_back("sandbox", "off");
  message.build.options.emplace_back("max_open_files", std::to_string(function.max_open_files));
  if (function.root_path_in_path) {
    message.build.options.emplace_back("root_path_in_path", *function.root_path_in_path ? "true" : "false");
  }
  message.fds.push_back(std::move(template_end));
  message.fds.emplace_back(pipe_fds[1]);
  if (Status s = channel_->send(message); !s) return Status::error("zygote: " + s.message());
  return handles;
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
