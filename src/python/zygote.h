// The zygote: the process the host starts (fork+exec of the coil binary as
// `coil __zygote FD`) to hold an initialised CPython from which templates are
// forked. See ARCHITECTURE.md for the process tree.
//
// Contract: serves kBuildTemplate messages on `control_fd` until the host
// closes it, then exits 0. Each template it forks reports to the host on the
// template's own control socket, not through the zygote.
#pragma once

namespace coil::python {

int run_zygote(int control_fd);

}  // namespace coil::python
