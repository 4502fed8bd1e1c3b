// Unit tests for the control protocol, over real AF_UNIX SOCK_SEQPACKET sockets.
#include "protocol/control.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace coil::control {
namespace {

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0) << std::strerror(errno);
    a_.reset(fds[0]);
    b_.reset(fds[1]);
  }

  // Sends `m` on a_ and receives it on b_.
  Message round_trip(const Message& m) {
    Status s = send(a_.get(), m);
    EXPECT_TRUE(s.is_ok()) << s.message();
    Message out;
    Status r = receive(b_.get(), out);
    EXPECT_TRUE(r.is_ok()) << r.message();
    return out;
  }

  static std::pair<unique_fd, unique_fd> make_pipe() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    return {unique_fd(p[0]), unique_fd(p[1])};
  }

  // Writes `text` into `write_fd` and reads it back from `read_fd`.
  static std::string through(int write_fd, int read_fd, const std::string& text) {
    EXPECT_EQ(::write(write_fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    std::string got(text.size() + 16, '\0');
    ssize_t n = ::read(read_fd, got.data(), got.size());
    EXPECT_GE(n, 0);
    got.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return got;
  }

  static bool same_file(int x, int y) {
    struct stat sx {}, sy{};
    if (::fstat(x, &sx) != 0 || ::fstat(y, &sy) != 0) return false;
    return sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
  }

  unique_fd a_;
  unique_fd b_;
};

TEST_F(ControlTest, BuildTemplateRoundTrip) {
  Message m;
  m.type = Type::kBuildTemplate;
  m.build.function = "hello";
  m.build.source = "/srv/app";
  m.build.entrypoint = "app:handle_request";
  m.build.environment = {{"GREETING", "hi"}, {"EMPTY", ""}, {"UTF8", "caf\xc3\xa9"}};
  m.build.kind = "asgi";
  m.build.root_path_in_path = "false";
  m.build.served_under_prefix = false;  // not the default
  m.build.isolation = Isolation::kNamespacesWithoutUserns;
  m.build.max_open_files = 4096;
  m.build.tmp_mb = 1ull << 33;  // more than 32 bits
  m.build.rlimit_data_mb = 256;
  m.build.volumes = {{Volume::Kind::kReadonly, "/data", "/srv/app/data", 0},
                     {Volume::Kind::kEphemeral, "/scratch", "", 32},
                     {Volume::Kind::kPersistent, "/state", "/var/lib/coil/volumes/hello/state", 0}};
  m.build.dependencies = "/var/lib/coil/deps/abc";
  Message out = round_trip(m);
  EXPECT_EQ(out.type, Type::kBuildTemplate);
  EXPECT_EQ(out.build.function, "hello");
  EXPECT_EQ(out.build.source, "/srv/app");
  EXPECT_EQ(out.build.entrypoint, "app:handle_request");
  EXPECT_EQ(out.build.environment, m.build.environment);
  EXPECT_EQ(out.build.kind, "asgi");
  EXPECT_EQ(out.build.root_path_in_path, "false");
  EXPECT_FALSE(out.build.served_under_prefix);
  EXPECT_EQ(out.build.isolation, Isolation::kNamespacesWithoutUserns);
  EXPECT_EQ(out.build.max_open_files, 4096u);
  EXPECT_EQ(out.build.tmp_mb, 1ull << 33);
  EXPECT_EQ(out.build.rlimit_data_mb, 256u);
  ASSERT_EQ(out.build.volumes.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out.build.volumes[i].kind, m.build.volumes[i].kind) << i;
    EXPECT_EQ(out.build.volumes[i].mount, m.build.volumes[i].mount) << i;
    EXPECT_EQ(out.build.volumes[i].host_path, m.build.volumes[i].host_path) << i;
    EXPECT_EQ(out.build.volumes[i].size_mib, m.build.volumes[i].size_mib) << i;
  }
  EXPECT_EQ(out.build.dependencies, "/var/lib/coil/deps/abc");
  EXPECT_TRUE(out.fds.empty());
}

TEST_F(ControlTest, BuildTemplateWithAnUnknownIsolationOrVolumeKindIsRefused) {
  for (int corrupt : {0, 1}) {
    Message m;
    m.type = Type::kBuildTemplate;
    m.build.function = "f";
    m.build.volumes = {{Volume::Kind::kEphemeral, "/scratch", "", 1}};
    if (corrupt == 0) m.build.isolation = static_cast<Isolation>(9);
    if (corrupt == 1) m.build.volumes[0].kind = static_cast<Volume::Kind>(7);
    ASSERT_TRUE(send(a_.get(), m).is_ok());
    Message out;
    Status s = receive(b_.get(), out);
    EXPECT_FALSE(s.is_ok()) << corrupt;
    EXPECT_FALSE(s.message().empty()) << corrupt;
  }
}

TEST_F(ControlTest, TemplateReadyRoundTripKeepsSixtyFourBits) {
  Message m;
  m.type = Type::kTemplateReady;
  m.ready.pid = 4242;
  m.ready.import_us = (uint64_t{1} << 40) + 7;
  m.ready.kind = "spin-http";
  Message out = round_trip(m);
  EXPECT_EQ(out.type, Type::kTemplateReady);
  EXPECT_EQ(out.ready.pid, 4242u);
  EXPECT_EQ(out.ready.import_us, (uint64_t{1} << 40) + 7);
  EXPECT_EQ(out.ready.kind, "spin-http");
}

TEST_F(ControlTest, TemplateFailedRoundTrip) {
  Message m;
  m.type = Type::kTemplateFailed;
  m.message = "ModuleNotFoundError: No module named 'app'\nTraceback ...";
  Message out = round_trip(m);
  EXPECT_EQ(out.type, Type::kTemplateFailed);
  EXPECT_EQ(out.message, m.message);
}

TEST_F(ControlTest, PageHintsRoundTripKeepBinaryPayload) {
  Message m;
  m.type = Type::kPageHints;
  for (uint64_t address : {uint64_t{0x7f0000001000}, uint64_t{0x55550000a001}}) {
    m.message.append(reinterpret_cast<const char*>(&address), sizeof address);
  }
  m.message.push_back('\0');  // NUL bytes are payload, not terminators
  Message out = round_trip(m);
  EXPECT_EQ(out.type, Type::kPageHints);
  EXPECT_EQ(out.message, m.message);
}

TEST_F(ControlTest, OverlongFailureMessageIsTruncatedNotRefused) {
  Message m;
  m.type = Type::kTemplateFailed;
  m.message = std::string(kMaxMessage * 2, 'x');
  Message out = round_trip(m);
  EXPECT_EQ(out.type, Type::kTemplateFailed);
  EXPECT_GT(out.message.size(), 1000u);
  EXPECT_LT(out.message.size(), kMaxMessage);
  EXPECT_EQ(out.message, m.message.substr(0, out.message.size()));
}

TEST_F(ControlTest, SpawnTemplateStartedAndExitedRoundTrip) {
  Message spawn;
  spawn.type = Type::kSpawn;
  spawn.token = 0xdeadbeef;
  Message out = round_trip(spawn);
  EXPECT_EQ(out.type, Type::kSpawn);
  EXPECT_EQ(out.token, 0xdeadbeefu);

  Message started;
  started.type = Type::kTemplateStarted;
  started.pid = 31337;
  out = round_trip(started);
  EXPECT_EQ(out.type, Type::kTemplateStarted);
  EXPECT_EQ(out.pid, 31337u);

  Message exited;
  exited.type = Type::kExited;
  exited.pid = 99;
  exited.wait_status = 0x8b;  // killed by SIGSEGV, core dumped
  out = round_trip(exited);
  EXPECT_EQ(out.type, Type::kExited);
  EXPECT_EQ(out.pid, 99u);
  EXPECT_EQ(out.wait_status, 0x8b);

  exited.wait_status = -1;  // the sign survives
  out = round_trip(exited);
  EXPECT_EQ(out.wait_status, -1);
}

TEST_F(ControlTest, RetireRoundTripHasNoBody) {
  Message retire;
  retire.type = Type::kRetire;
  EXPECT_EQ(round_trip(retire).type, Type::kRetire);
}

TEST_F(ControlTest, PassedFdRefersToTheSamePipe) {
  auto [read_end, write_end] = make_pipe();
  Message m;
  m.type = Type::kSpawn;
  m.token = 7;
  m.fds.emplace_back(::dup(write_end.get()));
  Message out = round_trip(m);
  EXPECT_EQ(out.token, 7u);
  ASSERT_EQ(out.fds.size(), 1u);
  ASSERT_TRUE(out.fds[0].valid());
  EXPECT_NE(out.fds[0].get(), m.fds[0].get());
  EXPECT_TRUE(same_file(out.fds[0].get(), write_end.get()));
  // Bytes written through the received fd come out of the original pipe.
  EXPECT_EQ(through(out.fds[0].get(), read_end.get(), "ping"), "ping");
  // The sender still owns its copy.
  EXPECT_TRUE(m.fds[0].valid());
  // Received fds are close-on-exec (they must not leak into children).
  EXPECT_TRUE(::fcntl(out.fds[0].get(), F_GETFD) & FD_CLOEXEC);
}

TEST_F(ControlTest, SeveralFdsArriveInOrder) {
  auto [r1, w1] = make_pipe();
  auto [r2, w2] = make_pipe();
  Message m;
  m.type = Type::kSpawned;
  m.token = 12;
  m.pid = 3456;
  m.fds.emplace_back(::dup(w1.get()));
  m.fds.emplace_back(::dup(r2.get()));
  Message out = round_trip(m);
  EXPECT_EQ(out.type, Type::kSpawned);
  EXPECT_EQ(out.token, 12u);
  EXPECT_EQ(out.pid, 3456u);
  ASSERT_EQ(out.fds.size(), 2u);
  EXPECT_EQ(through(out.fds[0].get(), r1.get(), "to one"), "to one");
  EXPECT_EQ(through(w2.get(), out.fds[1].get(), "from two"), "from two");
}

TEST_F(ControlTest, UpToMaxFdsAreAcceptedMoreAreRefused) {
  std::vector<std::pair<unique_fd, unique_fd>> pipes;
  Message m;
  m.type = Type::kBuildTemplate;
  m.build.function = "f";
  for (size_t i = 0; i < kMaxFds; ++i) {
    pipes.push_back(make_pipe());
    m.fds.emplace_back(::dup(pipes.back().second.get()));
  }
  Message out = round_trip(m);
  ASSERT_EQ(out.fds.size(), kMaxFds);
  for (size_t i = 0; i < kMaxFds; ++i) {
    std::string text = "pipe " + std::to_string(i);
    EXPECT_EQ(through(out.fds[i].get(), pipes[i].first.get(), text), text);
  }

  m.fds.emplace_back(::dup(pipes[0].second.get()));
  Status s = send(a_.get(), m);
  EXPECT_FALSE(s.is_ok());
  EXPECT_FALSE(s.message().empty());
}

TEST_F(ControlTest, MessageBoundariesArePreserved) {
  for (uint32_t i = 0; i < 5; ++i) {
    Message m;
    m.type = Type::kSpawn;
    m.token = i;
    ASSERT_TRUE(send(a_.get(), m).is_ok());
  }
  for (uint32_t i = 0; i < 5; ++i) {
    Message out;
    ASSERT_TRUE(receive(b_.get(), out).is_ok());
    EXPECT_EQ(out.type, Type::kSpawn);
    EXPECT_EQ(out.token, i);
  }
}

TEST_F(ControlTest, BothDirectionsWork) {
  Message m;
  m.type = Type::kTemplateStarted;
  m.pid = 5;
  ASSERT_TRUE(send(b_.get(), m).is_ok());
  Message out;
  ASSERT_TRUE(receive(a_.get(), out).is_ok());
  EXPECT_EQ(out.pid, 5u);
}

TEST_F(ControlTest, ReceivedFdsReplacePreviousOnes) {
  auto [r, w] = make_pipe();
  Message with_fd;
  with_fd.type = Type::kSpawn;
  with_fd.fds.emplace_back(::dup(w.get()));
  Message out = round_trip(with_fd);
  ASSERT_EQ(out.fds.size(), 1u);
  Message without;
  without.type = Type::kSpawn;
  ASSERT_TRUE(send(a_.get(), without).is_ok());
  ASSERT_TRUE(receive(b_.get(), out).is_ok());
  EXPECT_TRUE(out.fds.empty());
}

TEST_F(ControlTest, EofIsAnErrorWithAnEmptyMessage) {
  a_.reset();
  Message out;
  bool would_block = true;
  Status s = receive(b_.get(), out, &would_block);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.message(), "");
  EXPECT_FALSE(would_block);
}

TEST_F(ControlTest, EofAfterPendingMessages) {
  Message m;
  m.type = Type::kSpawn;
  m.token = 1;
  ASSERT_TRUE(send(a_.get(), m).is_ok());
  a_.reset();
  Message out;
  ASSERT_TRUE(receive(b_.get(), out).is_ok());  // queued messages are still delivered
  EXPECT_EQ(out.token, 1u);
  Status s = receive(b_.get(), out);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.message(), "");
}

TEST_F(ControlTest, SendToAClosedPeerIsAnError) {
  b_.reset();
  Message m;
  m.type = Type::kSpawn;
  Status s = send(a_.get(), m);  // MSG_NOSIGNAL: no SIGPIPE kills the test
  EXPECT_FALSE(s.is_ok());
  EXPECT_FALSE(s.message().empty());
}

TEST_F(ControlTest, NonBlockingReceiveReportsWouldBlock) {
  ASSERT_EQ(::fcntl(b_.get(), F_SETFL, ::fcntl(b_.get(), F_GETFL) | O_NONBLOCK), 0);
  Message out;
  bool would_block = false;
  Status s = receive(b_.get(), out, &would_block);
  EXPECT_FALSE(s.is_ok());
  EXPECT_TRUE(would_block);
  EXPECT_FALSE(s.message().empty());  // not mistaken for EOF

  // Without the out-parameter it is an ordinary error, still not EOF.
  Status t = receive(b_.get(), out);
  EXPECT_FALSE(t.is_ok());
  EXPECT_FALSE(t.message().empty());

  // And a message that arrives is then received, with would_block reset.
  Message m;
  m.type = Type::kSpawn;
  m.token = 3;
  ASSERT_TRUE(send(a_.get(), m).is_ok());
  would_block = true;
  ASSERT_TRUE(receive(b_.get(), out, &would_block).is_ok());
  EXPECT_FALSE(would_block);
  EXPECT_EQ(out.token, 3u);
}

TEST_F(ControlTest, UnknownTypeIsMalformed) {
  const char raw[] = {static_cast<char>(99), 1, 2, 3, 4};
  ASSERT_EQ(::send(a_.get(), raw, sizeof(raw), 0), static_cast<ssize_t>(sizeof(raw)));
  Message out;
  Status s = receive(b_.get(), out);
  EXPECT_FALSE(s.is_ok());
  EXPECT_FALSE(s.message().empty());
}

TEST_F(ControlTest, TruncatedBodyIsMalformed) {
  // kSpawned needs 8 bytes after the type; give 5.
  const char raw[] = {static_cast<char>(Type::kSpawned), 1, 0, 0, 0, 2};
  ASSERT_EQ(::send(a_.get(), raw, sizeof(raw), 0), static_cast<ssize_t>(sizeof(raw)));
  Message out;
  Status s = receive(b_.get(), out);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("malformed"), std::string::npos) << s.message();

  // A string whose length runs past the end of the message.
  std::string build;
  build.push_back(static_cast<char>(Type::kBuildTemplate));
  build.append("\x10\x00\x00\x00" "abc", 7);
  ASSERT_EQ(::send(a_.get(), build.data(), build.size(), 0), static_cast<ssize_t>(build.size()));
  Status t = receive(b_.get(), out);
  EXPECT_FALSE(t.is_ok());
  EXPECT_FALSE(t.message().empty());
}

TEST_F(ControlTest, OversizedDatagramIsReportedAsTruncated) {
  std::string big(kMaxMessage + 100, '\0');
  big[0] = static_cast<char>(Type::kTemplateFailed);
  ASSERT_EQ(::send(a_.get(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  Message out;
  Status s = receive(b_.get(), out);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace coil::control
