#include "router/route_table.h"

#include <algorithm>

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

}  // namespace

Status RouteTable::add(const std::string& route, size_t target) {
  constexpr std::string_view kWildcard = "/...";
  bool is_prefix = route.size() >= kWildcard.size() &&
                   std::string_view(route).substr(route.size() - kWildcard.size()) == kWildcard;
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

std::optional<Match> RouteTable::match(std::string_view path) const {
  if (auto it = exact_.find(std::string(path)); it != exact_.end()) {
    return Match{it->second, it->first, it->first, ""};
  }
  for (const Prefix& p : prefixes_) {
    std::string_view prefix = p.prefix;
    if (path.substr(0, prefix.size()) != prefix) continue;
    std::string_view rest = path.substr(prefix.size());
    if (!rest.empty() && rest[0] != '/') continue;  // "/ab" is not under "/a"
    return Match{p.target, p.route, prefix, std::string(rest)};
  }
  return std::nullopt;
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
