// The mount layer: a minimal, read-only root for a function's sandbox.
//
// What the function sees:
//   /usr (and the merged-usr links /bin, /lib, ...)  the host's, read-only
//   /etc      a small generated one (passwd, group, hosts, nsswitch.conf) plus
//             the host's /etc/ssl and /etc/localtime, read-only
//   /code     its code directory, read-only, the working directory
//   /tmp      a private tmpfs of tmp_mb MiB
//   /dev      null, zero, full, random, urandom, the std links, /dev/shm
//   /proc     a fresh procfs of its own pid namespace
//   volumes   where the manifest mounts them
// Everything is nosuid and nodev (except the device nodes themselves).
//
// Two halves, because the host's paths are only reachable by the host's
// root: assemble_root() runs in the zygote after it entered the sandbox's
// mount namespace (setns), and builds the tree at kStagingRoot; enter_root()
// runs in the sandboxed template, which mounts /proc (it must be done from
// inside the new pid namespace) and pivots into the tree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace coil::sandbox {

inline constexpr const char* kCodeMount = "/code";
// Where the new root is assembled inside the sandbox's (private) mount
// namespace. Any existing directory would do; /tmp exists everywhere, and
// covering it hides nothing that is still needed: sources are opened first.
inline constexpr const char* kStagingRoot = "/tmp";

struct VolumeMount {
  enum class Kind { kReadonly, kEphemeral, kPersistent };
  Kind kind = Kind::kReadonly;
  std::string mount;      // absolute path inside the sandbox
  std::string host_path;  // kReadonly, kPersistent: the host directory
  uint64_t size_mib = 0;  // kEphemeral: only the mount point is made here; each instance
                          // mounts its own tmpfs (instance_mounts.h)
};

struct MountPlan {
  std::string code_dir;  // host path
  uint64_t tmp_mb = 64;
  std::vector<VolumeMount> volumes;
  std::string hostname = "coil";
};

// In the zygote (host root), inside the sandbox's mount namespace.
Status assemble_root(const MountPlan& plan);

// In the sandboxed template, as root of its user namespace.
Status enter_root();

}  // namespace coil::sandbox
