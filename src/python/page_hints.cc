#include "python/page_hints.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <vector>

namespace coil::python::page_hints {
namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kPresent = 1ull << 63;
constexpr uint64_t kExclusive = 1ull << 56;  // "page exclusively mapped" (Linux 4.2+)
// Mappings larger than this are reservations (arenas, heaps of other
// allocators), not what a request touches page by page.
constexpr uint64_t kMaxMapping = 256ull << 20;
// A hint is a page address; its low bit says that the page was written
// (copied), else only read in (a page of code or data not yet mapped).
constexpr uint64_t kWritten = 1;

enum State : uint8_t { kAbsent = 0, kShared = 1, kOwn = 2 };

struct Range {
  uint64_t start;
  uint64_t end;
  bool private_writable;
};

// The readable mappings of this process, but the kernel's own ([vvar],
// [vsyscall]) and the stack.
std::vector<Range> readable_mappings() {
  std::vector<Range> ranges;
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (maps == nullptr) return ranges;
  char line[512];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long long start = 0, end = 0;
    char perms[5] = {0};
    if (std::sscanf(line, "%llx-%llx %4s", &start, &end, perms) != 3) continue;
    if (perms[0] != 'r') continue;
    if (std::strstr(line, "[v") != nullptr || std::strstr(line, "[stack]") != nullptr) continue;
    if (end - start > kMaxMapping) continue;
    ranges.push_back({start, end, perms[1] == 'w' && perms[3] == 'p'});
  }
  std::fclose(maps);
  return ranges;
}

State state_of(uint64_t entry) {
  if (!(entry & kPresent)) return kAbsent;
  return (entry & kExclusive) ? kOwn : kShared;
}

// Calls each(i, state) for the pages of `range` in order (i from 0), reading
// the page map a batch at a time on the stack; stops early when each()
// returns false. False if the page map could not be read.
template <typename Each>
bool for_each_state(int pagemap, const Range& range, Each each) {
  constexpr size_t kBatch = 512;
  uint64_t entries[kBatch];
  size_t pages = (range.end - range.start) / kPageSize;
  for (size_t done = 0; done < pages;) {
    size_t count = std::min(kBatch, pages - done);
    off_t offset = static_cast<off_t>((range.start / kPageSize + done) * sizeof(uint64_t));
    ssize_t n = ::pread(pagemap, entries, count * sizeof(uint64_t), offset);
    if (n <= 0 || n % static_cast<ssize_t>(sizeof(uint64_t)) != 0) return false;
    size_t got = static_cast<size_t>(n) / sizeof(uint64_t);
    for (size_t i = 0; i < got; ++i) {
      if (!each(done + i, state_of(entries[i]))) return true;
    }
    done += got;
  }
  return true;
}

// The snapshot: the mappings, and one state byte per page, in memory of its
// own (unmapped after the report, so it costs an instance nothing after).
struct Snapshot {
  std::vector<Range> ranges;
  uint8_t* states = nullptr;
  size_t size = 0;
};
Snapshot* g_snapshot = nullptr;
bool g_reported = false;

void drop_snapshot() {
  if (g_snapshot == nullptr) return;
  if (g_snapshot->states != nullptr) ::munmap(g_snapshot->states, g_snapshot->size);
  delete g_snapshot;
  g_snapshot = nullptr;
}

}  // namespace

void take_snapshot() {
  drop_snapshot();
  int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) return;
  auto* snapshot = new Snapshot{readable_mappings()};
  size_t pages = 0;
  for (const Range& range : snapshot->ranges) pages += (range.end - range.start) / kPageSize;
  snapshot->size = (pages + kPageSize - 1) / kPageSize * kPageSize;
  void* memory = pages == 0 ? MAP_FAILED
                            : ::mmap(nullptr, snapshot->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    ::close(pagemap);
    delete snapshot;
    return;
  }
  snapshot->states = static_cast<uint8_t*>(memory);
  size_t at = 0;
  bool ok = true;
  for (const Range& range : snapshot->ranges) {
    uint8_t* states = snapshot->states + at;
    ok = ok && for_each_state(pagemap, range, [states](size_t i, State state) {
           states[i] = state;
           return true;
         });
    at += (range.end - range.start) / kPageSize;
  }
  ::close(pagemap);
  g_snapshot = snapshot;
  if (!ok) drop_snapshot();
}

std::string first_request_report() {
  if (g_reported || g_snapshot == nullptr) return {};
  g_reported = true;
  int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  std::string report;
  if (pagemap >= 0) {
    constexpr size_t kLimit = kMaxPages * sizeof(uint64_t);
    report.reserve(kLimit);
    size_t at = 0;
    for (const Range& range : g_snapshot->ranges) {
      if (report.size() >= kLimit) break;
      const uint8_t* before = g_snapshot->states + at;
      for_each_state(pagemap, range, [&](size_t i, State now) {
        uint64_t address = range.start + i * kPageSize;
        if (range.private_writable && before[i] != kOwn && now == kOwn) {
          address |= kWritten;  // copied (or first written) by the request
        } else if (!(before[i] == kAbsent && now != kAbsent)) {
          return true;  // neither copied nor read in
        }
        report.append(reinterpret_cast<const char*>(&address), sizeof address);  // x86-64: little-endian
        return report.size() < kLimit;
      });
      at += (range.end - range.start) / kPageSize;
    }
    ::close(pagemap);
  }
  drop_snapshot();
  return report;
}

void prefault(std::string_view hints) {
  // madvise(MADV_POPULATE_*) faults pages in as a first touch would (a write
  // fault copies a private page), without changing a byte, atomically with
  // respect to any thread the hooks started, and fails instead of raising a
  // signal where a touch would crash (unmapped, past the end of a file,
  // PROT_NONE): so a stale or hostile hint costs at most a failed call.
  // Consecutive pages of the same kind go in one call.
  uint64_t run_start = 0, run_end = 0;
  bool run_written = false;
  auto flush = [&] {
    if (run_end > run_start) {
      (void)::madvise(reinterpret_cast<void*>(run_start), run_end - run_start,
                      run_written ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
    }
    run_start = run_end = 0;
  };
  for (size_t at = 0; at + sizeof(uint64_t) <= hints.size(); at += sizeof(uint64_t)) {
    uint64_t hint = 0;
    std::memcpy(&hint, hints.data() + at, sizeof hint);
    uint64_t address = hint & ~(kPageSize - 1);
    bool written = (hint & kWritten) != 0;
    if (address == 0) continue;
    if (address == run_end && written == run_written) {
      run_end += kPageSize;
      continue;
    }
    flush();
    run_start = address;
    run_end = address + kPageSize;
    run_written = written;
  }
  flush();
}

std::string merge(std::string_view hints, std::string_view more) {
  std::vector<uint64_t> all;
  for (std::string_view part : {hints, more}) {
    for (size_t at = 0; at + sizeof(uint64_t) <= part.size(); at += sizeof(uint64_t)) {
      uint64_t hint = 0;
      std::memcpy(&hint, part.data() + at, sizeof hint);
      all.push_back(hint);
    }
  }
  // By page, the copied form (low bit set) last, so that it is the one kept.
  std::sort(all.begin(), all.end());
  std::string merged;
  for (size_t i = 0; i < all.size() && merged.size() < kMaxPages * sizeof(uint64_t); ++i) {
    bool last_of_page = i + 1 == all.size() || (all[i + 1] & ~(kPageSize - 1)) != (all[i] & ~(kPageSize - 1));
    if (last_of_page) merged.append(reinterpret_cast<const char*>(&all[i]), sizeof(uint64_t));
  }
  return merged;
}

}  // namespace coil::python::page_hints
