// coil-python.so: coil's runtime for Python processes, loaded by Debian's
// python3.11 as the `_coil` extension module (python/command_line.h). It is
// kept apart from the `coil` binary so that every template and instance maps
// only what it needs (the interpreter, libseccomp, the C++ runtime). The
// `coil` binary links libcurl, libarchive, SQLite and OpenSSL, some sixty
// libraries in all; a process that maps them has about 320 memory areas, and
// a fork's cost grows with that count (it copies each area's bookkeeping).
// See ARCHITECTURE.md.
//
// Internal: the host starts `python3.11 ... -c BOOTSTRAP /proc/self/fd/4
// __zygote FD` (runtime/zygote_process.cc); each template execs its own
// interpreter as `... __template` once isolated, and a template whose import
// started threads starts its instances as `... __instance ...`
// (python/zygote.h).
// Nobody runs it by hand.
#include <Python.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "python/command_line.h"
#include "python/interpreter.h"
#include "python/zygote.h"

namespace coil::python {
namespace {

// The process as a plain interpreter leaves it, made into coil's: returns
// the command (sys.argv[2:]; sys.argv[1] is where the module was loaded
// from), and leaves `module` in sys.modules as `_coil`, sys.argv and
// sys.orig_argv as ["coil"], __main__ without the bootstrap's names, no
// Python signal handler (the host owns signals), and nothing of the host's
// loader settings in the environment.
bool take_over_process(PyObject* module, std::vector<std::string>& command) {
  if (PyDict_SetItemString(PyImport_GetModuleDict(), "_coil", module) != 0) return false;
  PyObject* argv = PySys_GetObject("argv");  // borrowed
  if (argv == nullptr || !PyList_Check(argv)) {
    PyErr_SetString(PyExc_RuntimeError, "sys.argv is missing");
    return false;
  }
  for (Py_ssize_t i = 2; i < PyList_GET_SIZE(argv); ++i) {
    const char* arg = PyUnicode_AsUTF8(PyList_GET_ITEM(argv, i));
    if (arg == nullptr) return false;
    command.emplace_back(arg);
  }
  constexpr const char* kSetUp = R"py(
import os, signal, sys, __main__
sys.argv = ["coil"]
sys.orig_argv = ["coil"]
for name in ("m", "u", "sys"):  # bound by the bootstrap (command_line.h)
    __main__.__dict__.pop(name, None)
# Python's default SIGINT handler (KeyboardInterrupt) is not installed in
# function processes: Ctrl-C is the host's, which stops them.
signal.signal(signal.SIGINT, signal.SIG_DFL)
# Set by the host for the loader only (runtime/zygote_process.cc): function
# code, and any program it starts, must not inherit it.
os.environ.pop("LD_BIND_NOW", None)
del os, signal, sys, __main__
)py";
  return run_python(kSetUp) && install_embedded_finder();
}

// _coil.main(): never returns. Once only: function code that calls it gets
// a RuntimeError.
PyObject* main_entry(PyObject* module, PyObject*) {
  static bool started = false;
  if (started) {
    PyErr_SetString(PyExc_RuntimeError, "coil's runtime is running already");
    return nullptr;
  }
  started = true;
  std::vector<std::string> command;
  if (!take_over_process(module, command)) {
    PyErr_Print();
    _exit(1);
  }
  if (command.size() == 2 && command[0] == "__zygote") {
    _exit(run_zygote(std::atoi(command[1].c_str()), kRuntimeModuleFd));
  }
  if (command.size() == 1 && command[0] == "__template") run_fresh_template();
  if (command.size() >= 3 && command[0] == "__instance") run_fresh_instance(command);
  std::fprintf(stderr, "coil-python.so is loaded by coil (coil up, coil server), not by hand\n");
  _exit(2);
}

PyMethodDef kEntry[] = {
    {"main", main_entry, METH_NOARGS, "Runs coil's zygote or a fresh instance; does not return."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace
}  // namespace coil::python

PyMODINIT_FUNC PyInit__coil() {
  PyObject* module = coil::python::create_native_module();
  if (module != nullptr && PyModule_AddFunctions(module, coil::python::kEntry) != 0) Py_CLEAR(module);
  return module;
}
