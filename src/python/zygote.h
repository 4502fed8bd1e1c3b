// The zygote: the process the host starts (fork+exec of python3.11, which
// loads coil-python.so and runs `__zygote FD`: command_line.h, main.cc),
// single-threaded, from which templates are forked into their sandboxes;
// each then execs an interpreter of its own. See ARCHITECTURE.md for the
// process tree.
//
// Contract: serves kBuildTemplate messages on `control_fd` until the host
// closes it, then exits 0. Each template it forks reports to the host on the
// template's own control socket, not through the zygote.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace coil::python {

// runtime_module: the fd of the coil-python.so this process loaded
// (command_line.h), which templates whose import started threads keep.
int run_zygote(int control_fd, int runtime_module);

// `__template`: a template's own interpreter, exec'd by the template the
// zygote forked once it is isolated (zygote.cc, exec_template_interpreter),
// with its control socket on fd 3, coil-python.so on fd 4 and its spec (a
// kBuildTemplate message, then a kTemplateStarted with its host pid) to read
// on fd 5. Imports the function's code,
// reports ready, and serves its instances. Never returns.
[[noreturn]] void run_fresh_template();

// `__instance FUNCTION ENTRYPOINT KEY=VALUE...`: an instance started
// as a fresh process, for a template that must not fork because its import
// started threads. It runs inside the template's sandbox (inherited through
// exec), with its instance socket on fd 3, its output on fds 1 and 2 and
// coil-python.so on fd 4 (closed once loaded); it
// imports the entrypoint itself, runs both hook lists, and serves. Never
// returns.
[[noreturn]] void run_fresh_instance(const std::vector<std::string>& command);

}  // namespace coil::python
