// coil-python: the program that runs Python for the host, kept apart from
// the `coil` binary so that every template and instance maps only what it
// needs (libpython, libseccomp, the C++ runtime). The `coil` binary links
// libcurl, libarchive, SQLite and OpenSSL, some sixty libraries in all; a
// process that maps them has about 320 memory areas, and a fork's cost grows
// with that count (it copies each area's bookkeeping). See ARCHITECTURE.md.
//
// Internal: the host starts `coil-python __zygote FD`
// (runtime/zygote_process.cc); a template whose import started threads
// starts `coil-python __instance ...` (python/zygote.h). Nobody runs it by hand.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "python/zygote.h"

int main(int argc, char** argv) {
  // Set by the host for the loader only (runtime/zygote_process.cc): function
  // code, and any program it starts, must not inherit it.
  ::unsetenv("LD_BIND_NOW");
  if (argc == 3 && std::strcmp(argv[1], "__zygote") == 0) return coil::python::run_zygote(std::atoi(argv[2]));
  if (argc >= 4 && std::strcmp(argv[1], "__instance") == 0) coil::python::run_fresh_instance(argc, argv);
  std::fprintf(stderr, "coil-python is started by coil (coil up, coil server), not by hand\n");
  return 2;
}
