#include "python/interpreter.h"

#include <cstring>

#include "python/codec.h"
#include "python/embedded_sources.h"

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

PyObject* init_native_module() {
  PyObject* module = PyModule_Create(&kModule);
  if (module != nullptr && (PyModule_AddFunctions(module, codec_methods()) != 0 || !prepare_codec())) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}

// Puts a finder for the embedded modules first on sys.meta_path.
constexpr const char* kBootstrap = R"py(
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

Status start_interpreter() {
  if (PyImport_AppendInittab("_coil", &init_native_module) != 0) {
    return Status::error("cannot register the _coil module");
  }
  // UTF-8 mode: file names, os.environ and stdio are UTF-8 whatever the
  // locale (an isolated pre-configuration would otherwise leave it "C", ASCII).
  PyPreConfig preconfig;
  PyPreConfig_InitIsolatedConfig(&preconfig);
  preconfig.utf8_mode = 1;
  PyStatus pre = Py_PreInitialize(&preconfig);
  if (PyStatus_Exception(pre)) {
    return Status::error(std::string("cannot start Python: ") + (pre.err_msg ? pre.err_msg : "?"));
  }
  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.buffered_stdio = 0;
  config.install_signal_handlers = 0;
  config.user_site_directory = 0;
  config.site_import = 1;
  // Debian's interpreter: its prefix (/usr) gives the stdlib and, through
  // Debian's site.py, /usr/lib/python3/dist-packages.
  PyStatus status = PyConfig_SetString(&config, &config.program_name, L"/usr/bin/python3.11");
  if (!PyStatus_Exception(status)) {
    wchar_t* argv[] = {const_cast<wchar_t*>(L"coil")};
    status = PyConfig_SetArgv(&config, 1, argv);
  }
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    return Status::error(std::string("cannot start Python: ") + (status.err_msg ? status.err_msg : "?"));
  }
  if (PyRun_SimpleString(kBootstrap) != 0) return Status::error("cannot install coil's module finder");
  return Status::ok();
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
