#include "protocol/control.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "protocol/wire.h"

namespace coil::control {
namespace {

bool read_isolation(wire::Cursor& c, Isolation& isolation) {
  uint8_t value = 0;
  if (!c.u8(value) || value > static_cast<uint8_t>(Isolation::kFull)) return false;
  isolation = static_cast<Isolation>(value);
  return true;
}

bool read_volumes(wire::Cursor& c, std::vector<Volume>& volumes) {
  uint32_t count = 0;
  if (!c.u32(count)) return false;
  volumes.clear();
  for (uint32_t i = 0; i < count; ++i) {
    Volume volume;
    uint8_t kind = 0;
    if (!c.u8(kind) || kind > static_cast<uint8_t>(Volume::Kind::kPersistent) || !c.str(volume.mount) ||
        !c.str(volume.host_path) || !c.u64(volume.size_mib)) {
      return false;
    }
    volume.kind = static_cast<Volume::Kind>(kind);
    volumes.push_back(std::move(volume));
  }
  return true;
}

}  // namespace

Status send(int socket, const Message& m, bool* would_block) {
  if (would_block) *would_block = false;
  std::string out;
  out.push_back(static_cast<char>(m.type));
  switch (m.type) {
    case Type::kBuildTemplate:
      wire::put_str(out, m.build.function);
      wire::put_str(out, m.build.source);
      wire::put_str(out, m.build.entrypoint);
      wire::put_pairs(out, m.build.environment);
      wire::put_str(out, m.build.kind);
      wire::put_str(out, m.build.root_path_in_path);
      out.push_back(m.build.served_under_prefix ? 1 : 0);
      out.push_back(static_cast<char>(m.build.isolation));
      wire::put_u64(out, m.build.max_open_files);
      wire::put_u64(out, m.build.tmp_mb);
      wire::put_u64(out, m.build.rlimit_data_mb);
      wire::put_u32(out, static_cast<uint32_t>(m.build.volumes.size()));
      for (const Volume& volume : m.build.volumes) {
        out.push_back(static_cast<char>(volume.kind));
        wire::put_str(out, volume.mount);
        wire::put_str(out, volume.host_path);
        wire::put_u64(out, volume.size_mib);
      }
      wire::put_str(out, m.build.dependencies);
      break;
    case Type::kTemplateReady:
      wire::put_u32(out, m.ready.pid);
      wire::put_u64(out, m.ready.import_us);
      wire::put_str(out, m.ready.kind);
      wire::put_str(out, m.ready.threads);
      break;
    case Type::kTemplateFailed:
    case Type::kPageHints:
      wire::put_str(out, m.message.substr(0, kMaxMessage - 64));
      break;
    case Type::kSpawn:
    case Type::kPrepare:
      wire::put_u32(out, m.token);
      break;
    case Type::kSpawned:
      wire::put_u32(out, m.token);
      wire::put_u32(out, m.pid);
      break;
    case Type::kTemplateStarted:
      wire::put_u32(out, m.pid);
      break;
    case Type::kOutboundListener:
    case Type::kRetire:
      break;
    case Type::kExited:
      wire::put_u32(out, m.pid);
      wire::put_u32(out, static_cast<uint32_t>(m.wait_status));
      break;
  }
  if (out.size() > kMaxMessage) return Status::error("control message too large");

  iovec iov{out.data(), out.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!m.fds.empty()) {
    if (m.fds.size() > kMaxFds) return Status::error("too many fds in a control message");
    std::memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * m.fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * m.fds.size());
    int* fds = reinterpret_cast<int*>(CMSG_DATA(cmsg));
    for (size_t i = 0; i < m.fds.size(); ++i) fds[i] = m.fds[i].get();
  }
  while (true) {
    ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n >= 0) return Status::ok();
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && would_block) {
      *would_block = true;
      return Status::error("would block");
    }
    return Status::error(std::string("control send: ") + std::strerror(errno));
  }
}

Status receive(int socket, Message& m, bool* would_block) {
  if (would_block) *would_block = false;
  // Left uninitialised on purpose: recvmsg writes only the message's bytes.
  // In a template, every page written here is copied after each fork (copy
  // on write), and zero-filling 64 KiB cost 16 page copies per message.
  std::unique_ptr<char[]> buffer(new char[kMaxMessage]);
  iovec iov{buffer.get(), kMaxMessage};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && would_block) {
      *would_block = true;
      return Status::error("would block");
    }
    return Status::error(std::string("control receive: ") + std::strerror(errno));
  }
  m.fds.clear();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; ++i) m.fds.emplace_back(fds[i]);
    }
  }
  if (n == 0) return Status::error("");
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Status::error("control message truncated");

  wire::Cursor c(std::string_view(buffer.get(), static_cast<size_t>(n)));
  std::string_view all = c.rest();
  m.type = static_cast<Type>(all[0]);
  c = wire::Cursor(all.substr(1));
  bool ok = false;
  switch (m.type) {
    case Type::kBuildTemplate:
      ok = c.str(m.build.function) && c.str(m.build.source) && c.str(m.build.entrypoint) &&
           c.pairs(m.build.environment) && c.str(m.build.kind) && c.str(m.build.root_path_in_path) &&
           c.flag(m.build.served_under_prefix) && read_isolation(c, m.build.isolation) && c.u64(m.build.max_open_files) && c.u64(m.build.tmp_mb) &&
           c.u64(m.build.rlimit_data_mb) && read_volumes(c, m.build.volumes) && c.str(m.build.dependencies);
      break;
    case Type::kTemplateReady:
      ok = c.u32(m.ready.pid) && c.u64(m.ready.import_us) && c.str(m.ready.kind) && c.str(m.ready.threads);
      break;
    case Type::kTemplateFailed:
    case Type::kPageHints:
      ok = c.str(m.message);
      break;
    case Type::kSpawn:
    case Type::kPrepare:
      ok = c.u32(m.token);
      break;
    case Type::kSpawned:
      ok = c.u32(m.token) && c.u32(m.pid);
      break;
    case Type::kTemplateStarted:
      ok = c.u32(m.pid);
      break;
    case Type::kOutboundListener:
    case Type::kRetire:
      ok = true;
      break;
    case Type::kExited: {
      uint32_t status = 0;
      ok = c.u32(m.pid) && c.u32(status);
      m.wait_status = static_cast<int32_t>(status);
      break;
    }
  }
  if (!ok) return Status::error("malformed control message");
  return Status::ok();
}

}  // namespace coil::control
