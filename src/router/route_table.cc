#include "router/route_table.h"

#include <algorithm>

#include "common/ascii.h"

namespace coil::router {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool has_dot_dot_segment(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (path.substr(start, end - start) == "..") return true;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return false;
}

constexpr std::string_view kWildcard = "/...";

// A path's segments, as a route's: "/a/b" -> {"a", "b"}, "/" -> {""},
// "/a/" -> {"a", ""}, "" (the prefix of "/...") -> {}.
std::vector<std::string_view> segments_of(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty()) return out;
  for (size_t start = 1;;) {
    size_t slash = path.find('/', start);
    size_t end = slash == std::string_view::npos ? path.size() : slash;
    out.push_back(path.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

bool is_capture(std::string_view segment) { return !segment.empty() && segment[0] == ':'; }

// How specific a route is, position by position (see route_table.h): the
// greater sequence wins, compared from the left.
enum Specificity : int { kRest = 0, kEnd = 1, kCapture = 2, kLiteral = 3 };

template <typename Segments>
std::vector<int> specificity_of(const Segments& segments, bool prefix) {
  std::vector<int> out;
  out.reserve(segments.size() + 1);
  for (const auto& segment : segments) out.push_back(is_capture(segment) ? kCapture : kLiteral);
  out.push_back(prefix ? kRest : kEnd);
  return out;
}

}  // namespace

std::string capture_header(std::string_view name) {
  std::string out = "spin-path-match-";
  for (char c : name) out.push_back(c == '_' ? '-' : ascii::lower(c));
  return out;
}

std::optional<RawMatch> raw_match(std::string_view target, std::string_view route, std::string_view prefix,
                                  std::string_view decoded_path_info) {
  std::string_view path = target.substr(0, target.find('?'));
  for (size_t at = path.find('%'); at != std::string_view::npos; at = path.find('%', at + 1)) {
    bool encoded_slash = path.size() - at >= 3 && path[at + 1] == '2' && ascii::lower(path[at + 2]) == 'f';
    if (encoded_slash) return std::nullopt;
  }
  std::vector<std::string_view> segments = segments_of(path);  // views into `path`
  std::vector<std::string_view> parts = segments_of(route);
  RawMatch raw;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!is_capture(parts[i])) continue;
    if (i >= segments.size()) return std::nullopt;
    raw.captures.emplace_back(parts[i].substr(1), segments[i]);
  }
  if (route.ends_with(kWildcard)) {
    // The prefix covers as many raw segments as it has '/'s; the rest (from
    // the '/' before the next one) is the path info. A target with fewer is
    // not the one the prefix was matched on.
    size_t covered = static_cast<size_t>(std::count(prefix.begin(), prefix.end(), '/'));
    if (segments.size() < covered) return std::nullopt;
    if (covered < segments.size()) {
      raw.path_info = std::string(path.substr(static_cast<size_t>(segments[covered].data() - path.data()) - 1));
    }
  }
  // The raw values stand for the decoded ones only if they decode to them.
  if (!raw.path_info.empty()) {
    Result<std::string> decoded = decode_path(raw.path_info);
    if (!decoded || *decoded != decoded_path_info) return std::nullopt;
  } else if (!decoded_path_info.empty()) {
    return std::nullopt;
  }
  return raw;
}

std::string route_shape(std::string_view route) {
  std::string out;
  out.reserve(route.size());
  for (size_t start = 0; start < route.size();) {
    size_t slash = route.find('/', start + 1);
    std::string_view part = route.substr(start, slash == std::string_view::npos ? slash : slash - start);
    out.append(part.starts_with("/:") ? std::string_view("/:") : part);
    start = slash == std::string_view::npos ? route.size() : slash;
  }
  return out;
}

Status RouteTable::add(const std::string& route, size_t target) {
  bool is_prefix = route.size() >= kWildcard.size() &&
                   std::string_view(route).substr(route.size() - kWildcard.size()) == kWildcard;
  std::string_view fixed = std::string_view(route).substr(0, route.size() - (is_prefix ? kWildcard.size() : 0));
  std::vector<std::string_view> segments = segments_of(fixed);
  if (std::any_of(segments.begin(), segments.end(), is_capture)) {
    // The same shape with other capture names is the same route.
    Pattern pattern{route, std::vector<std::string>(segments.begin(), segments.end()), is_prefix, target};
    std::string shape = route_shape(route);
    for (const Pattern& other : patterns_) {
      if (route_shape(other.route) == shape) {
        return Status::error("duplicate route " + route + " (the same as " + other.route + ")");
      }
    }
    patterns_.push_back(std::move(pattern));
    return Status::ok();
  }
  if (!is_prefix) {
    if (!exact_.emplace(route, target).second) return Status::error("duplicate route " + route);
    return Status::ok();
  }
  std::string prefix = route.substr(0, route.size() - kWildcard.size());
  for (const Prefix& p : prefixes_) {
    if (p.prefix == prefix) return Status::error("duplicate route " + route);
  }
  prefixes_.push_back({route, std::move(prefix), target});
  std::stable_sort(prefixes_.begin(), prefixes_.end(),
                   [](const Prefix& a, const Prefix& b) { return a.prefix.size() > b.prefix.size(); });
  return Status::ok();
}

std::optional<Match> RouteTable::match_literal(std::string_view path) const {
  if (auto it = exact_.find(std::string(path)); it != exact_.end()) {
    return Match{it->second, it->first, it->first, "", {}};
  }
  for (const Prefix& p : prefixes_) {
    std::string_view prefix = p.prefix;
    if (path.substr(0, prefix.size()) != prefix) continue;
    std::string_view rest = path.substr(prefix.size());
    if (!rest.empty() && rest[0] != '/') continue;  // "/ab" is not under "/a"
    return Match{p.target, p.route, std::string(prefix), std::string(rest), {}};
  }
  return std::nullopt;
}

std::optional<Match> RouteTable::match(std::string_view path) const {
  std::optional<Match> best = match_literal(path);
  if (patterns_.empty()) return best;
  std::vector<int> best_specificity;
  if (best) {
    bool prefix = best->route.ends_with(kWildcard);
    std::string_view fixed = best->route.substr(0, best->route.size() - (prefix ? kWildcard.size() : 0));
    best_specificity = specificity_of(segments_of(fixed), prefix);
  }
  std::vector<std::string_view> path_segments = segments_of(path);
  for (const Pattern& pattern : patterns_) {
    size_t count = pattern.segments.size();
    if (pattern.prefix ? path_segments.size() < count : path_segments.size() != count) continue;
    bool matches = true;
    for (size_t i = 0; i < count && matches; ++i) {
      const std::string& segment = pattern.segments[i];
      matches = is_capture(segment) ? !path_segments[i].empty() : path_segments[i] == segment;
    }
    if (!matches) continue;
    std::vector<int> specificity = specificity_of(pattern.segments, pattern.prefix);
    if (best && specificity <= best_specificity) continue;
    // The matched part ends where its last segment does (views into `path`).
    size_t end = static_cast<size_t>(path_segments[count - 1].data() + path_segments[count - 1].size() - path.data());
    Match match{pattern.target, pattern.route, std::string(path.substr(0, end)), std::string(path.substr(end)), {}};
    for (size_t i = 0; i < count; ++i) {
      if (is_capture(pattern.segments[i])) {
        match.captures.emplace_back(pattern.segments[i].substr(1), std::string(path_segments[i]));
      }
    }
    best = std::move(match);
    best_specificity = std::move(specificity);
  }
  return best;
}

Result<std::string> decode_path(std::string_view target) {
  if (target.empty() || target[0] != '/') return Status::error("request target must start with '/'");
  std::string_view raw = target.substr(0, target.find('?'));
  if (raw.find('\0') != std::string_view::npos) return Status::error("NUL byte in path");
  if (has_dot_dot_segment(raw)) return Status::error("'..' segment in path");
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '%') {
      out.push_back(c);
      continue;
    }
    int hi = i + 2 < raw.size() ? hex_value(raw[i + 1]) : -1;
    int lo = i + 2 < raw.size() ? hex_value(raw[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      // Not an escape: the '%' stands for itself. What follows it is decoded
      // on its own, so no escape is made of it, and the result is checked
      // for NUL and ".." below like any other.
      out.push_back('%');
      continue;
    }
    char decoded = static_cast<char>(hi * 16 + lo);
    if (decoded == '\0') return Status::error("NUL byte in path");
    out.push_back(decoded);
    i += 2;
  }
  if (has_dot_dot_segment(out)) return Status::error("'..' segment in path");
  return out;
}

}  // namespace coil::router
