// coil's side of the interpreter it runs in (Debian's python3.11, started
// as python/command_line.h says): the `_coil` native module, coil's Python
// package compiled into it, and small helpers for the C API.
#pragma once

#include <Python.h>

#include <string>


namespace coil::python {

// A new `_coil` module: the codec (codec.h) and embedded_source(), or
// nullptr with the Python error set. Called by the module's PyInit (main.cc).
PyObject* create_native_module();

// Makes coil's Python package (python/, compiled in) importable: a finder
// first on sys.meta_path. Called once per interpreter (the zygote, a
// template, a fresh instance), before coil's package is imported. False with the Python error set.
bool install_embedded_finder();

// Runs Python `source` (statements) in a namespace of its own, so that none
// of its names lands in __main__. False with the Python error set.
bool run_python(const char* source);

// The pending Python exception as "Type: message" (clears it).
std::string take_exception_summary();

// Imports `module` and returns a new reference to `attr` of it, or nullptr
// with the Python error set.
PyObject* import_attr(const char* module, const char* attr);

}  // namespace coil::python
