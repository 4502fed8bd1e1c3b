// How coil's Python side is started: Debian's own python3.11 program,
// loading coil's runtime (the coil-python.so module, src/python/main.cc)
// and handing it the process.
//
// Why python3.11 and not an embedded libpython: Debian builds the
// interpreter of /usr/bin/python3.11 apart from libpython3.11.so, statically
// linked, position-dependent and optimised for speed; the library is
// position-independent code for embedding. The same FastAPI request runs 19%
// more instructions in the library (bench/interpreter_cost.py), so function
// code under an embedding coil ran slower than under `python3` and uvicorn.
//
// Header-only, and free of Python.h: the host (runtime/zygote_process.cc)
// builds the zygote's command line with it, and a template whose import
// started threads builds its fresh instances' (python/zygote.cc).
#pragma once

#include <string>
#include <vector>

namespace coil::python {

// Debian's interpreter: the same program `python3` runs.
inline constexpr const char* kPythonProgram = "/usr/bin/python3.11";

// Where every process started on python3.11 finds coil-python.so: fd 4, a
// sealed in-memory copy the host makes at start (runtime/zygote_process.cc).
// The zygote keeps it, close-on-exec, for templates whose instances must be
// started fresh (python/zygote.cc); an instance started so closes it once
// loaded. Through an fd and not a path: inside a sandbox the host's file is
// out of sight, and the host's paths are not shown to function code.
inline constexpr int kRuntimeModuleFd = 4;
inline constexpr const char* kRuntimeModulePath = "/proc/self/fd/4";

// Loads coil-python.so from argv[1] (kRuntimeModulePath) as the `_coil`
// module and calls its main(), which takes argv[2:] as its command
// (`__zygote FD`, `__instance ...`) and never returns to this code. One
// line, so that `ps` shows it whole; main() deletes the names it binds from
// __main__.
inline constexpr const char* kBootstrap =
    "import importlib.machinery as m, importlib.util as u, sys; "
    "u.module_from_spec(u.spec_from_loader('_coil', m.ExtensionFileLoader('_coil', sys.argv[1]))).main()";

// The argv of `python3.11 -I -u -X utf8 -c BOOTSTRAP /proc/self/fd/4 ARGS...`:
// isolated (no PYTHON* variables, no user site, no script directory on
// sys.path), unbuffered stdio, UTF-8 mode whatever the locale.
inline std::vector<std::string> python_command_line(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kPythonProgram, "-I", "-u", "-X", "utf8", "-c", kBootstrap, kRuntimeModulePath};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace coil::python
