#include "python/interpreter.h"

#include <cstring>

#include "python/codec.h"
#include "python/embedded_sources.h"
#include "python/exchange.h"

namespace coil::python {
namespace {

// _coil.embedded_source(name) -> (source, is_package) | None
PyObject* embedded_source(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  for (const EmbeddedModule* m = kEmbeddedModules; m->name != nullptr; ++m) {
    if (std::strcmp(m->name, name) == 0) {
      return Py_BuildValue("(sO)", m->source, m->package ? Py_True : Py_False);
    }
  }
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"embedded_source", embedded_source, METH_O, "Source of one of coil's embedded modules."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_coil", "coil's native helpers", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

// Puts a finder for the embedded modules first on sys.meta_path.
constexpr const char* kFinderSource = R"py(
import sys, importlib.abc, importlib.util, _coil

class _EmbeddedLoader(importlib.abc.Loader):
    def __init__(self, source, package):
        self._source = source
        self._package = package

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if self._package:
            module.__path__ = []
        filename = "<coil>/" + module.__name__.replace(".", "/") + ".py"
        exec(compile(self._source, filename, "exec"), module.__dict__)


class _EmbeddedFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        found = _coil.embedded_source(name)
        if found is None:
            return None
        source, package = found
        return importlib.util.spec_from_loader(name, _EmbeddedLoader(source, package), is_package=package)

sys.meta_path.insert(0, _EmbeddedFinder)
)py";

}  // namespace

PyObject* create_native_module() {
  PyObject* module = PyModule_Create(&kModule);
  if (module != nullptr &&
      (PyModule_AddFunctions(module, codec_methods()) != 0 || !prepare_codec() || !add_exchange_types(module))) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}

bool install_embedded_finder() { return run_python(kFinderSource); }

bool run_python(const char* source) {
  PyObject* globals = PyDict_New();
  if (globals == nullptr) return false;
  PyObject* done = PyRun_String(source, Py_file_input, globals, globals);
  Py_DECREF(globals);
  Py_XDECREF(done);
  return done != nullptr;
}

std::string take_exception_summary() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  std::string out = "unknown error";
  if (value != nullptr) {
    PyObject* text = PyObject_Str(value);
    const char* type_name = type ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "Error";
    const char* message = text ? PyUnicode_AsUTF8(text) : nullptr;
    out = std::string(type_name) + ": " + (message ? message : "?");
    Py_XDECREF(text);
  }
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
  return out;
}

PyObject* import_attr(const char* module, const char* attr) {
  PyObject* mod = PyImport_ImportModule(module);
  if (mod == nullptr) return nullptr;
  PyObject* result = PyObject_GetAttrString(mod, attr);
  Py_DECREF(mod);
  return result;
}

}  // namespace coil::python
