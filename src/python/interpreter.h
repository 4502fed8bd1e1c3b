// The embedded CPython interpreter (Debian's libpython3.11).
//
// Contract: start_interpreter() is called once, in the zygote, before any
// fork. It configures an isolated interpreter (no PYTHON* environment
// variables, no user site), unbuffered stdio, no Python signal handlers (the
// host owns signals), Debian's /usr prefix so system packages import, and
// makes coil's embedded Python package importable. On return the calling
// thread holds the GIL.
#pragma once

#include <Python.h>

#include <string>

#include "common/status.h"

namespace coil::python {

Status start_interpreter();

// The pending Python exception as "Type: message" (clears it).
std::string take_exception_summary();

// Imports `module` and returns a new reference to `attr` of it, or nullptr
// with the Python error set.
PyObject* import_attr(const char* module, const char* attr);

}  // namespace coil::python
