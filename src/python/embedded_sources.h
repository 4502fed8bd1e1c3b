// coil's Python package, compiled into the binary (see cmake/embed_python.cmake).
#pragma once

namespace coil::python {

struct EmbeddedModule {
  const char* name;  // dotted module name; nullptr ends the table
  bool package;
  const char* source;
};

extern const EmbeddedModule kEmbeddedModules[];

}  // namespace coil::python
