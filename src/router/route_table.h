// The route table: maps a request path to a function, with Spin's rules.
//
// A route is either exact ("/hello") or a prefix ending in "/..." that also
// matches the bare prefix ("/a/..." matches "/a", "/a/", "/a/b"). "/..." alone
// matches everything. A segment ":name" (Spin >= 2.5) matches any one
// non-empty path segment and captures it ("/users/:id",
// "/users/:id/posts/..."). The most specific route wins, compared segment by
// segment from the left: a literal segment beats a capture, which beats the
// rest of a prefix route; a route that ends there beats a prefix route that
// would match the rest. So an exact route beats a prefix, and a longer prefix
// beats a shorter one. Matching is done on the percent-decoded path (see
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
  size_t target;           // what add() was given for this route
  std::string_view route;  // the route as written
  std::string prefix;      // the part of the decoded path the route matched, without
                           // "/..."'s part (the whole path when exact)
  std::string path_info;   // the decoded path after the prefix ("" for an exact match)
  std::vector<std::pair<std::string, std::string>> captures;  // (name, segment) per ":name", in order
};

class RouteTable {
 public:
  // Adds a route (already validated by config::validate_route). Fails if the
  // same route is present, or one that differs only in capture names.
  Status add(const std::string& route, size_t target);
  std::optional<Match> match(std::string_view decoded_path) const;

 private:
  struct Prefix {
    std::string route;
    std::string prefix;
    size_t target;
  };
  // A route with a ":name" segment.
  struct Pattern {
    std::string route;
    std::vector<std::string> segments;  // of the route, without "/..."; ":name" for a capture
    bool prefix;                             // ends in "/..."
    size_t target;
  };
  std::optional<Match> match_literal(std::string_view path) const;
  std::unordered_map<std::string, size_t> exact_;
  std::vector<Prefix> prefixes_;  // longest prefix first
  std::vector<Pattern> patterns_;
};

// What a route matches, as a key: the route with each capture written ":"
// ("/users/:id/..." -> "/users/:/..."). Two routes with the same shape are
// the same route, whatever their capture names.
std::string route_shape(std::string_view route);

// The request header a handler gets a capture ":name" as (Spin):
// "spin-path-match-" and the name lower-cased, '_' written '-'.
std::string capture_header(std::string_view name);

// A match as Spin reports it to a handler: Spin routes on the raw path, so its
// spin-path-info and spin-path-match-* headers hold the path as the client
// sent it, escapes and all ("/a%20b", not "/a b").
struct RawMatch {
  std::string path_info;                                      // "" for an exact route
  std::vector<std::pair<std::string, std::string>> captures;  // (name, raw segment) per ":name"
};

// The raw counterparts of a Match's path_info and captures, from the request
// `target` (origin-form, as decode_path() accepted it) and the Match's `route`,
// `prefix` and `path_info` (decoded). Decoding maps raw segments one to one
// onto decoded ones, except where a segment holds "%2F": then nullopt, and
// the decoded values stand; so they do when the target is not the one the
// match was made on (its raw path info does not decode to `path_info`).
std::optional<RawMatch> raw_match(std::string_view target, std::string_view route, std::string_view prefix,
                                  std::string_view decoded_path_info);

// Percent-decodes the path part of a request target (up to '?'), once. A '%'
// not followed by two hex digits ("/items/100%", "%zz") is kept as it is, as
// uvicorn and Starlette do. Fails on a NUL byte (raw or "%00"), a target that
// is not origin-form, or a ".." segment (before or after decoding): such
// requests are answered 400.
Result<std::string> decode_path(std::string_view target);

}  // namespace coil::router
