// The control protocol between the host, the zygote and the templates.
//
// Control channels are AF_UNIX SOCK_SEQPACKET sockets: one message per
// send/recv, with file descriptors passed alongside (SCM_RIGHTS). They carry
// rare, small messages (a template to build, an instance to fork), so
// simplicity beats batching here; the data plane uses frames (frame.h).
//
//   host -> zygote     kBuildTemplate  {function, source, entrypoint, environment, kind,
//                                       root_path_in_path, isolation, limits, volumes, dependencies}
//                                      fds: [template's control socket, output pipe (write end),
//                                            cgroup.procs of each of the function's cgroups (0 to 3)]
//   zygote -> host     kOutboundListener {}               fds: [a listening TCP socket at
//     (on the template's channel, before the template      127.0.0.1:kOutboundProxyPort inside the
//      runs: so it comes first)                           function's network namespace]
//   template -> host   kTemplateStarted {pid}            (first, before importing)
//                      kTemplateReady  {pid, import_us, kind, threads}
//                      kTemplateFailed {message}
//   host -> template   kPrepare        {token}            fds: [cgroup.procs of each of the instance's
//                                                             cgroups (0 to 3)]: fork a standby
//   host -> template   kSpawn          {token}            fds: [instance socket, and unless `token`
//                                                             names a standby, the cgroup.procs files]
//   template -> host   kSpawned        {token, pid}       fds: [pidfd, output pipe (read end)]
//                      kExited         {pid, wait_status}
//   host -> template   kRetire         {}                 coil stops, the instances' sockets are
//                                                         closed: end the standbys (an ASGI one runs
//                                                         lifespan shutdown), exit once the last instance
//                                                         and standby have exited
//
// A template exits when its control socket closes (its children die with it)
// or, after kRetire, when its last instance and standby have exited (other
// processes left in its pid namespace die with it); the zygote exits when its
// own socket closes; instances exit when their instance socket closes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace coil::control {

enum class Type : uint8_t {
  kBuildTemplate = 1,
  kTemplateReady = 2,
  kTemplateFailed = 3,
  kSpawn = 4,
  kSpawned = 5,
  kExited = 6,
  kTemplateStarted = 7,
  kOutboundListener = 8,
  kPrepare = 9,
  kPageHints = 10,  // host -> template: an instance's page hints (`message`), for its standbys
  kRetire = 11,
};

// How much of the sandbox a template builds (the host's runtime::SandboxMode).
enum class Isolation : uint8_t {
  kNone = 0,                     // no sandbox at all (--no-sandbox)
  kSeccompOnly = 1,              // rlimits and seccomp, no namespaces
  kNamespacesWithoutUserns = 2,  // namespaces, on a root host without user namespaces
  kFull = 3,                     // every layer
};

// A volume of a template's sandbox, resolved by the host (config::Volume).
struct Volume {
  enum class Kind : uint8_t { kReadonly = 0, kEphemeral = 1, kPersistent = 2 };
  Kind kind = Kind::kReadonly;
  std::string mount;      // absolute path inside the sandbox
  std::string host_path;  // kReadonly, kPersistent: the host directory
  uint64_t size_mib = 0;  // kEphemeral: each instance's tmpfs
};

struct BuildTemplate {
  std::string function;
  std::string source;
  std::string entrypoint;
  std::vector<std::pair<std::string, std::string>> environment;
  // What coil._runtime.load() is told: the kind the manifest forces ("auto",
  // "handler" or "asgi"), and root_path_in_path ("true", "false", or "" to
  // detect it from the framework).
  std::string kind = "auto";
  std::string root_path_in_path;
  // Whether a request may come with a route prefix (config::may_see_route_prefix):
  // the note at start on what scope["path"] does with one is for such functions.
  bool served_under_prefix = true;
  // The sandbox.
  Isolation isolation = Isolation::kFull;
  uint64_t max_open_files = 1024;  // RLIMIT_NOFILE of each process
  uint64_t tmp_mb = 64;             // the size of /tmp
  uint64_t rlimit_data_mb = 0;  // the memory limit as RLIMIT_DATA (a host without cgroups); 0: none
  std::vector<Volume> volumes;
  std::string dependencies;     // a host directory of packages (read-only at /deps), "" for none
};

struct TemplateReady {
  uint32_t pid = 0;
  uint64_t import_us = 0;
  std::string kind;
  // Threads the import started ("name (tid), ..."); not empty means the
  // template does not fork its instances but starts them as fresh processes.
  std::string threads;
};

struct Message {
  Type type{};
  // Fields used by the types above (unused ones are left empty).
  BuildTemplate build;
  TemplateReady ready;
  std::string message;      // kTemplateFailed; kPageHints: the hints
  uint32_t token = 0;       // kPrepare, kSpawn, kSpawned
  uint32_t pid = 0;         // kSpawned, kExited, kTemplateStarted
  int32_t wait_status = 0;  // kExited
  std::vector<unique_fd> fds;
};

inline constexpr size_t kMaxMessage = 64 * 1024;
inline constexpr size_t kMaxFds = 8;

// Sends one message with its fds (the fds stay owned by `message`). On a
// non-blocking socket whose buffer is full, reports it through
// `would_block` (when given) and sends nothing.
Status send(int socket, const Message& message, bool* would_block = nullptr);

// Receives one message. Returns an error with an empty message on orderly
// EOF (the peer is gone), a descriptive one otherwise. The socket may be
// non-blocking; then EAGAIN is reported as "would block" via `would_block`.
Status receive(int socket, Message& message, bool* would_block = nullptr);

}  // namespace coil::control
