// The host's handle on the zygote process (see python/zygote.h).
//
// Contract: start() must be called while the host is still single-threaded
// (it forks). The zygote is exec'd from the coil binary itself with a clean
// environment, in its own process group (a terminal's Ctrl-C reaches only
// the host), and dies with SIGKILL if the host dies (PR_SET_PDEATHSIG; the
// templates and instances under it die the same way, in a chain).
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "config/manifest.h"
#include "runtime/control_channel.h"

namespace coil::runtime {

// How templates (and so instances) are isolated (see src/sandbox/), chosen
// once by the host from what the machine offers.
enum class SandboxMode {
  kOff,                  // --no-sandbox: nothing
  kSeccompOnly,          // not root: rlimits and the seccomp filter
  kNamespacesNoUserns,   // root, no user namespaces: every layer but the user namespace
  kFull,                 // root with user namespaces: every layer
};

// The mode the machine allows, and its one-line description for the log.
SandboxMode best_sandbox_mode();
std::string describe(SandboxMode mode);

struct TemplateHandles {
  unique_fd control;  // the host's end of the template's control socket
  unique_fd output;   // the read end of the template's stdout/stderr pipe
};

class ZygoteProcess {
 public:
  // `data_dir`: where persistent volumes live (DATA/volumes/FUNCTION/NAME).
  static Result<std::unique_ptr<ZygoteProcess>> start(boost::asio::io_context& io, SandboxMode sandbox,
                                                      std::string data_dir);
  ~ZygoteProcess();

  // Asks the zygote to fork a template for `function`. The template reports
  // on the returned control socket (kTemplateStarted, then kTemplateReady or
  // kTemplateFailed).
  // `cgroup_procs`: the cgroup.procs files of the function's cgroups, which
  // the zygote puts the template in before it runs (its instances start
  // there too; see sandbox/cgroup.h, move_later()).
  Result<TemplateHandles> build_template(const config::FunctionConfig& function,
                                         std::vector<unique_fd> cgroup_procs = {});

  pid_t pid() const { return pid_; }
  // Whether functions see their volumes at their mount points (they have a
  // mount namespace), or only at their host paths (--no-sandbox, no root).
  bool mounts_volumes() const {
    return sandbox_ == SandboxMode::kFull || sandbox_ == SandboxMode::kNamespacesNoUserns;
  }
  // Kills the zygote and every process under it (its process group).
  void stop();

 private:
  ZygoteProcess(std::shared_ptr<ControlChannel> channel, pid_t pid, SandboxMode sandbox, std::string data_dir)
      : channel_(std::move(channel)), pid_(pid), sandbox_(sandbox), data_dir_(std::move(data_dir)) {}
  // Creates (once) and returns the host directory of a persistent volume.
  Result<std::string> persistent_volume(const std::string& function, const std::string& name);

  std::shared_ptr<ControlChannel> channel_;
  pid_t pid_;
  SandboxMode sandbox_;
  std::string data_dir_;
};

}  // namespace coil::runtime
