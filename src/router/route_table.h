// The route table: maps a request path to a function, with Spin's rules.
//
// A route is either exact ("/hello") or a prefix ending in "/..." that also
// matches the bare prefix ("/a/..." matches "/a", "/a/", "/a/b"). "/..." alone
// matches everything. An exact route beats a prefix; a longer prefix beats a
// shorter one. Matching is done on the percent-decoded path (see
// decode_path()).
//
// Thread-safety: immutable after construction; lookups may run concurrently.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace coil::router {

struct Match {
  size_t target;            // what add() was given for this route
  std::string_view route;   // the route as written
  std::string_view prefix;  // the route without "/..." (equal to route when exact)
  std::string path_info;    // the decoded path after the prefix ("" for an exact match)
};

class RouteTable {
 public:
  // Adds a route (already validated by config::validate_route). Fails if the
  // same route is present.
  Status add(const std::string& route, size_t target);
  std::optional<Match> match(std::string_view decoded_path) const;

 private:
  struct Prefix {
    std::string route;
    std::string prefix;
    size_t target;
  };
  std::unordered_map<std::string, size_t> exact_;
  std::vector<Prefix> prefixes_;  // longest prefix first
};

// Percent-decodes the path part of a request target (up to '?'), once. A '%'
// not followed by two hex digits ("/items/100%", "%zz") is kept as it is, as
// uvicorn and Starlette do. Fails on a NUL byte (raw or "%00"), a target that
// is not origin-form, or a ".." segment (before or after decoding): such
// requests are answered 400.
Result<std::string> decode_path(std::string_view target);

}  // namespace coil::router
