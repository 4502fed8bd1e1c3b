// Page hints: taking the first request's copy-on-write faults off the cold
// start.
//
// An instance forked from its template shares the template's memory until it
// writes to it; its first request writes (reference counts, caches) to a few
// hundred pages it shares, and each write copies a page: about 1 ms of the
// FastAPI tutorial app's first request, against 0.15 ms for the next ones
// (bench/RESULTS.md). So:
//   1. a standby takes a snapshot of which of its pages are still shared
//      (take_snapshot(), from /proc/self/pagemap) just before it waits;
//   2. after its first request, the instance reports which of those pages its
//      request copied (first_request_report(), sent to the host, which passes
//      the first reports on to the template, which merges them);
//   3. later standbys fault those pages in ahead of need (prefault(), with
//      madvise(MADV_POPULATE_WRITE / _READ): as a first touch would, without
//      changing a byte).
// A standby then holds, before its first request, the pages that request
// would have copied anyway: no more memory than an instance that served once.
//
// Hints are only advice, and may be wrong or hostile (the function's code
// runs in the reporting instance): madvise() refuses what a touch would crash
// on, so a hint can do no more than fault in a page of the standby's own
// memory.
#pragma once

#include <string>
#include <string_view>

#include "protocol/frame.h"

namespace coil::python::page_hints {

// The most page addresses a report carries (the host refuses larger ones).
inline constexpr size_t kMaxPages = frame::kMaxPageHints;

// In a standby, just before it waits for its socket. Cheap to skip; costs a
// read of /proc/self/pagemap over the private writable mappings.
void take_snapshot();

// In an instance, once, after its first request was answered: the addresses
// of the pages that were shared at the snapshot and are now this process's
// own, as little-endian u64s; "" without a snapshot (or on any error).
std::string first_request_report();

// In a standby, from the template's hints: copies each page ahead of need.
void prefault(std::string_view hints);

// In the template: the union of two sets of hints (a page both copied and
// read counts as copied), at most kMaxPages. A standby that prefaulted and
// then took a snapshot reports only what its first request still faulted, so
// merging such reports refines the hints (a first request that was a health
// check does not fix them for good).
std::string merge(std::string_view hints, std::string_view more);

}  // namespace coil::python::page_hints
