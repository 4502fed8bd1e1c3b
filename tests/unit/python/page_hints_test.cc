#include "python/page_hints.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>

namespace coil::python::page_hints {
namespace {

constexpr uint64_t kPage = 4096;

std::set<uint64_t> addresses(const std::string& report, bool written) {
  std::set<uint64_t> found;
  for (size_t at = 0; at + 8 <= report.size(); at += 8) {
    uint64_t hint;
    std::memcpy(&hint, report.data() + at, 8);
    if (((hint & 1) != 0) == written) found.insert(hint & ~(kPage - 1));
  }
  return found;
}

// Runs `body` in a forked child (a snapshot is a one-shot, per-process
// thing) and expects it to exit 0; gtest assertions in the child become its
// exit status.
template <typename Body>
void in_child(Body body) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(body() ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(PageHints, ReportsThePagesAFirstRequestCopiedAndNotTheOthers) {
  // Shared with the child by fork, as a template's heap is with an instance.
  auto* memory = static_cast<char*>(
      ::mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(memory, MAP_FAILED);
  std::memset(memory, 7, 8 * kPage);
  in_child([&] {
    take_snapshot();
    memory[2 * kPage] = 1;  // the "first request" writes two pages
    memory[5 * kPage + 9] = 1;
    std::string report = first_request_report();
    std::set<uint64_t> written = addresses(report, true);
    auto base = reinterpret_cast<uint64_t>(memory);
    bool ok = written.count(base + 2 * kPage) == 1 && written.count(base + 5 * kPage) == 1 &&
              written.count(base + 3 * kPage) == 0 && written.count(base) == 0;
    // A second report is empty: it is made once.
    return ok && first_request_report().empty();
  });
  ::munmap(memory, 8 * kPage);
}

TEST(PageHints, WithoutASnapshotThereIsNothingToReport) {
  in_child([] { return first_request_report().empty(); });
}

TEST(PageHints, PrefaultCopiesHintedPagesAndIgnoresAddressesOutsideTheProcess) {
  auto* memory = static_cast<char*>(
      ::mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(memory, MAP_FAILED);
  std::memset(memory, 3, 4 * kPage);
  in_child([&] {
    auto base = reinterpret_cast<uint64_t>(memory);
    std::string hints;
    // A copy of page 1, a page that is not mapped at all (must be ignored,
    // not fault), and an unaligned junk value.
    for (uint64_t hint : {base + kPage + 1, uint64_t{0x1000} | 1, uint64_t{0xdeadbeef}}) {
      hints.append(reinterpret_cast<const char*>(&hint), 8);
    }
    take_snapshot();
    prefault(hints);
    std::string report = first_request_report();  // what prefault() copied shows as copied
    std::set<uint64_t> written = addresses(report, true);
    bool ok = written.count(base + kPage) == 1 && written.count(base + 2 * kPage) == 0;
    // The contents are untouched.
    for (size_t i = 0; i < 4 * kPage; ++i) ok = ok && memory[i] == 3;
    return ok;
  });
  ::munmap(memory, 4 * kPage);
}

}  // namespace
}  // namespace coil::python::page_hints

namespace coil::python::page_hints {
namespace {

std::string pack(std::initializer_list<uint64_t> hints) {
  std::string out;
  for (uint64_t hint : hints) out.append(reinterpret_cast<const char*>(&hint), 8);
  return out;
}

TEST(PageHints, MergeIsAUnionByPageThatKeepsTheCopiedForm) {
  std::string merged = merge(pack({0x3000, 0x1000 | 1, 0x5000}), pack({0x3000 | 1, 0x1000, 0x2000}));
  EXPECT_EQ(merged, pack({0x1000 | 1, 0x2000, 0x3000 | 1, 0x5000}));
  EXPECT_EQ(merge({}, pack({0x2000})), pack({0x2000}));
  EXPECT_EQ(merge(pack({0x2000}), {}), pack({0x2000}));
}

TEST(PageHints, MergeStopsAtTheLimit) {
  std::string many;
  for (uint64_t page = 1; page <= kMaxPages + 10; ++page) {
    uint64_t hint = page * kPage;
    many.append(reinterpret_cast<const char*>(&hint), 8);
  }
  EXPECT_EQ(merge(many, {}).size(), kMaxPages * 8);
}

}  // namespace
}  // namespace coil::python::page_hints
