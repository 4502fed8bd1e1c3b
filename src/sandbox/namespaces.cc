#include "sandbox/namespaces.h"

#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "common/unique_fd.h"

namespace coil::sandbox {
namespace {

Status os_error(const std::string& what) { return Status::error(what + ": " + std::strerror(errno)); }

}  // namespace

unsigned long namespace_clone_flags(bool user) {
  // No CLONE_NEWCGROUP here: the cgroup namespace is made in contain(),
  // once the zygote has put the template into its function's group, so that
  // it is rooted there and hides coil's own group name (and pid).
  unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
  if (user) flags |= CLONE_NEWUSER;
  return flags;
}

Result<unique_fd> open_child_file(const ChildRef& child, const std::string& relative, int flags) {
  std::string path = "/proc/" + std::to_string(child.pid) + "/" + relative;
  unique_fd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return os_error("open " + path);
  // Still alive after the open, so the file was the child's.
  if (::syscall(SYS_pidfd_send_signal, child.pidfd, 0, nullptr, 0) != 0) {
    return Status::error("the template died while its sandbox was being set up");
  }
  return fd;
}

Status write_id_maps(const ChildRef& child) {
  const std::string map = "0 " + std::to_string(kHostRootUid) + " 1\n" + std::to_string(kFunctionUid) + " " +
                          std::to_string(kHostFunctionUid) + " 1\n";
  for (const char* file : {"uid_map", "gid_map"}) {  // the same numbers for groups
    Result<unique_fd> fd = open_child_file(child, file, O_WRONLY);
    if (!fd) return fd.status();
    if (::write(fd->get(), map.data(), map.size()) != static_cast<ssize_t>(map.size())) {
      return os_error(std::string("write ") + file);
    }
  }
  return Status::ok();
}

Status become_namespace_root() {
  if (::setgroups(0, nullptr) != 0) return os_error("setgroups");
  if (::setresgid(0, 0, 0) != 0) return os_error("setresgid(0)");
  if (::setresuid(0, 0, 0) != 0) return os_error("setresuid(0)");
  return Status::ok();
}

Status set_hostname(const std::string& name) {
  if (::sethostname(name.data(), name.size()) != 0) return os_error("sethostname");
  return Status::ok();
}

namespace {

Status bring_up_loopback() {
  unique_fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return os_error("socket");
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &request) != 0) return os_error("SIOCGIFFLAGS lo");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &request) != 0) return os_error("SIOCSIFFLAGS lo");
  return Status::ok();
}

Result<unique_fd> open_loopback_listener(uint16_t port) {
  if (Status s = bring_up_loopback(); !s) return s;
  unique_fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!sock) return os_error("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return os_error("bind 127.0.0.1:" + std::to_string(port));
  }
  if (::listen(sock.get(), 128) != 0) return os_error("listen");
  return sock;
}

}  // namespace

Result<unique_fd> listen_inside(const ChildRef& child, int own_net_ns, uint16_t port) {
  Result<unique_fd> child_net_ns = open_child_file(child, "ns/net", O_RDONLY);
  if (!child_net_ns) return child_net_ns.status();
  if (::setns(child_net_ns->get(), CLONE_NEWNET) != 0) return os_error("setns into the sandbox's network namespace");
  Result<unique_fd> listener = open_loopback_listener(port);
  if (::setns(own_net_ns, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "coil: zygote: cannot return to its network namespace: %s\n", std::strerror(errno));
    std::abort();
  }
  return listener;
}

Status become_function_user(bool in_user_namespace) {
  uid_t id = in_user_namespace ? kFunctionUid : kHostFunctionUid;
  if (::setgroups(0, nullptr) != 0) return os_error("setgroups");
  if (::setresgid(id, id, id) != 0) return os_error("setresgid");
  // Leaving uid 0 for a non-zero uid clears the permitted, effective and
  // ambient capability sets (no SECBIT_KEEP_CAPS is set).
  if (::setresuid(id, id, id) != 0) return os_error("setresuid");
  // The uid change made the process non-dumpable already; say so, as the
  // contract (namespaces.h) depends on it.
  if (::prctl(PR_SET_DUMPABLE, 0) != 0) return os_error("prctl(PR_SET_DUMPABLE)");
  return Status::ok();
}

Status enter_instance() {
  if (::prctl(PR_SET_DUMPABLE, 1) != 0) return os_error("prctl(PR_SET_DUMPABLE)");
  return Status::ok();
}

bool user_namespaces_available() {
  std::ifstream max("/proc/sys/user/max_user_namespaces");
  long value = 0;
  if (!(max >> value) || value <= 0) return false;
  return true;
}

}  // namespace coil::sandbox
