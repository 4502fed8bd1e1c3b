#include "config/manifest.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "common/ascii.h"
#include "router/route_table.h"

namespace coil::config {
namespace {

namespace fs = std::filesystem;

struct Where {
  const std::string& path;
  std::string error(int64_t line, std::string_view field, std::string_view what) const {
    return fmt::format("{}:{}: {}: {}", path, line, field, what);
  }
};

int64_t line_of(const toml::node& node) { return node.source().begin.line; }

bool is_identifier(std::string_view s) {
  if (s.empty()) return false;
  if (!(ascii::is_alpha(s[0]) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(ascii::is_alnum(c) || c == '_')) return false;
  }
  return true;
}

// Reads an integer field into `out`, checking its range.
template <typename T>
Status read_int(const toml::table& fn, std::string_view key, T& out, int64_t min, int64_t max,
                const Where& where, const std::string& fn_name, std::string_view field = {}) {
  if (field.empty()) field = key;  // the name in messages: "volume.size_mib" for a nested table
  const toml::node* node = fn.get(key);
  if (node == nullptr) return Status::ok();
  auto value = node->value<int64_t>();
  if (!node->is_integer() || !value) {
    return Status::error(where.error(line_of(*node), field,
                                     fmt::format("must be an integer (function \"{}\")", fn_name)));
  }
  if (*value < min || *value > max) {
    return Status::error(where.error(
        line_of(*node), field,
        fmt::format("must be between {} and {}, got {} (function \"{}\")", min, max, *value, fn_name)));
  }
  out = static_cast<T>(*value);
  return Status::ok();
}

Status read_string(const toml::table& fn, std::string_view key, std::string& out, const Where& where,
                   int64_t table_line, bool required, const std::string& fn_name, std::string_view field = {}) {
  if (field.empty()) field = key;  // the name in messages: "volume.mount" for a nested table
  const toml::node* node = fn.get(key);
  if (node == nullptr) {
    if (!required) return Status::ok();
    return Status::error(where.error(table_line, field,
                                     fmt::format("missing (function \"{}\")", fn_name)));
  }
  if (!node->is_string()) {
    return Status::error(
        where.error(line_of(*node), field, fmt::format("must be a string (function \"{}\")", fn_name)));
  }
  out = node->value<std::string>().value_or("");
  return Status::ok();
}

constexpr std::string_view kKnownKeys[] = {
    "name",      "entrypoint",    "source",          "route",       "timeout_ms",
    "min_instances", "max_instances", "idle_timeout_ms", "max_queue", "max_body_bytes",
    "environment", "kind", "max_concurrency", "stream_idle_timeout_ms", "root_path_in_path", "max_open_files",
    "memory_mb", "max_processes", "cpu", "tmp_mb", "volume", "allowed_outbound_hosts", "persistent",
};

// Paths the sandbox itself provides: a volume may not cover them.
constexpr std::string_view kReservedMounts[] = {"/usr", "/etc", "/proc", "/dev", "/code", "/tmp", "/bin",
                                                "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/root"};

Status validate_mount_path(const std::string& mount) {
  if (mount.empty() || mount[0] != '/') return Status::error("must be an absolute path");
  if (mount == "/") return Status::error("cannot be \"/\"");
  if (mount.size() > 255) return Status::error("is too long");
  size_t start = 1;
  while (start <= mount.size()) {
    size_t end = mount.find('/', start);
    if (end == std::string::npos) end = mount.size();
    std::string_view part(mount.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return Status::error(fmt::format("\"{}\" must be a normalised path (no \"//\", \".\" or \"..\")", mount));
    }
    start = end + 1;
  }
  for (std::string_view reserved : kReservedMounts) {
    if (mount == reserved || (mount.size() > reserved.size() && mount.compare(0, reserved.size(), reserved) == 0 &&
                              mount[reserved.size()] == '/')) {
      return Status::error(fmt::format("\"{}\" is inside {}, which the sandbox provides", mount, reserved));
    }
  }
  return Status::ok();
}

Result<Volume> parse_volume(const toml::table& table, const Where& where, const fs::path& base_dir,
                            const std::string& label) {
  Volume volume;
  int64_t line = line_of(table);
  for (const auto& [key, node] : table) {
    std::string_view k = key.str();
    if (k != "mount" && k != "kind" && k != "source" && k != "name" && k != "size_mib") {
      return Status::error(where.error(line_of(node), fmt::format("volume.{}", k),
                                       fmt::format("unknown key (function \"{}\")", label)));
    }
  }
  std::string kind;
  if (Status s = read_string(table, "mount", volume.mount, where, line, true, label, "volume.mount"); !s) return s;
  if (Status s = validate_mount_path(volume.mount); !s) {
    return Status::error(where.error(line_of(*table.get("mount")), "volume.mount",
                                     fmt::format("{} (function \"{}\")", s.message(), label)));
  }
  if (Status s = read_string(table, "kind", kind, where, line, true, label, "volume.kind"); !s) return s;
  int64_t kind_line = line_of(*table.get("kind"));
  auto refuse = [&](std::string_view field, std::string_view what) {
    return Status::error(where.error(table.get(field) ? line_of(*table.get(field)) : kind_line,
                                     fmt::format("volume.{}", field),
                                     fmt::format("{} (function \"{}\", volume {})", what, label, volume.mount)));
  };
  auto forbid = [&](std::string_view field) -> Status {
    if (table.get(field)) return refuse(field, fmt::format("is not used by {} volume", kind == "ephemeral" ? "an ephemeral" : "a " + kind));
    return Status::ok();
  };
  if (kind == "readonly") {
    volume.kind = Volume::Kind::kReadonly;
    if (Status s = forbid("name"); !s) return s;
    if (Status s = forbid("size_mib"); !s) return s;
    std::string source;
    if (Status s = read_string(table, "source", source, where, line, true, label, "volume.source"); !s) return s;
    fs::path path = fs::path(source).is_absolute() ? fs::path(source) : base_dir / source;
    std::error_code ec;
    fs::path canonical = fs::canonical(path, ec);
    if (ec || !fs::is_directory(canonical)) return refuse("source", fmt::format("\"{}\" is not a directory", source));
    volume.source = canonical.string();
  } else if (kind == "ephemeral") {
    volume.kind = Volume::Kind::kEphemeral;
    if (Status s = forbid("name"); !s) return s;
    if (Status s = forbid("source"); !s) return s;
    volume.size_mib = 16;
    if (Status s = read_int(table, "size_mib", volume.size_mib, 1, 65536, where, label, "volume.size_mib"); !s) return s;
  } else if (kind == "persistent") {
    volume.kind = Volume::Kind::kPersistent;
    if (Status s = forbid("source"); !s) return s;
    if (Status s = forbid("size_mib"); !s) return s;
    if (Status s = read_string(table, "name", volume.name, where, line, true, label, "volume.name"); !s) return s;
    if (!is_valid_name(volume.name)) return refuse("name", fmt::format("\"{}\" must match [a-z0-9-]+", volume.name));
  } else {
    return refuse("kind", fmt::format("must be \"readonly\", \"ephemeral\" or \"persistent\", got \"{}\"", kind));
  }
  return volume;
}

Result<FunctionConfig> parse_function(const toml::table& fn, const Where& where,
                                      const fs::path& base_dir) {
  FunctionConfig config;
  int64_t table_line = line_of(fn);

  // The name first, so that later messages can say which function they are about.
  const toml::node* name_node = fn.get("name");
  std::string label = "?";
  if (name_node != nullptr && name_node->is_string()) label = name_node->value<std::string>().value_or("?");

  for (const auto& [key, node] : fn) {
    bool known = false;
    for (auto k : kKnownKeys) known = known || k == key.str();
    if (!known) {
      return Status::error(where.error(line_of(node), key.str(),
                                       fmt::format("unknown key (function \"{}\")", label)));
    }
  }

  if (Status s = read_string(fn, "name", config.name, where, table_line, true, label); !s) return s;
  if (!is_valid_name(config.name)) {
    return Status::error(where.error(line_of(*name_node), "name",
                                     fmt::format("\"{}\" must match [a-z0-9-]+", config.name)));
  }
  if (Status s = read_string(fn, "entrypoint", config.entrypoint, where, table_line, true, label); !s)
    return s;
  int64_t entry_line = line_of(*fn.get("entrypoint"));
  if (Status s = validate_entrypoint(config.entrypoint); !s) {
    return Status::error(where.error(entry_line, "entrypoint",
                                     fmt::format("{} (function \"{}\")", s.message(), label)));
  }
  config.entrypoint_origin = fmt::format("{}:{}", where.path, entry_line);

  if (Status s = read_string(fn, "route", config.route, where, table_line, true, label); !s) return s;
  if (config.route.ends_with("/*")) config.route.replace(config.route.size() - 1, 1, "...");  // Spin's other spelling
  if (Status s = validate_route(config.route); !s) {
    return Status::error(where.error(line_of(*fn.get("route")), "route",
                                     fmt::format("{} (function \"{}\")", s.message(), label)));
  }
  if (config.route.size() > 1 && config.route.back() == '/') config.route.pop_back();

  std::string source = ".";
  if (Status s = read_string(fn, "source", source, where, table_line, false, label); !s) return s;
  fs::path source_path = fs::path(source).is_absolute() ? fs::path(source) : base_dir / source;
  std::error_code ec;
  fs::path canonical = fs::canonical(source_path, ec);
  if (ec || !fs::is_directory(canonical)) {
    int64_t line = fn.get("source") ? line_of(*fn.get("source")) : table_line;
    return Status::error(where.error(
        line, "source", fmt::format("\"{}\" is not a directory (function \"{}\")", source, label)));
  }
  config.source = canonical.string();

  constexpr int64_t kMaxU32 = std::numeric_limits<uint32_t>::max();
  Status s;
  if (!(s = read_int(fn, "timeout_ms", config.timeout_ms, 1, kMaxU32, where, label))) return s;
  if (!(s = read_int(fn, "min_instances", config.min_instances, 0, 100000, where, label))) return s;
  if (!(s = read_int(fn, "max_instances", config.max_instances, 1, 100000, where, label))) return s;
  if (!(s = read_int(fn, "idle_timeout_ms", config.idle_timeout_ms, 1, kMaxU32, where, label)))
    return s;
  if (!(s = read_int(fn, "max_queue", config.max_queue, 0, 1000000, where, label))) return s;
  if (!(s = read_int(fn, "max_body_bytes", config.max_body_bytes, 0, int64_t{1} << 40, where, label)))
    return s;
  if (!(s = read_int(fn, "max_concurrency", config.max_concurrency, 1, 100000, where, label))) return s;
  if (!(s = read_int(fn, "max_open_files", config.max_open_files, 16, 1048576, where, label))) return s;
  if (!(s = read_int(fn, "stream_idle_timeout_ms", config.stream_idle_timeout_ms, 1, kMaxU32, where, label)))
    return s;
  if (!(s = read_int(fn, "memory_mb", config.memory_mb, 16, 1048576, where, label))) return s;
  if (!(s = read_int(fn, "max_processes", config.max_processes, 1, 1000000, where, label))) return s;
  if (!(s = read_int(fn, "tmp_mb", config.tmp_mb, 1, 1048576, where, label))) return s;
  if (const toml::node* cpu = fn.get("cpu")) {
    auto value = cpu->value<double>();
    if (!(cpu->is_floating_point() || cpu->is_integer()) || !value || *value < 0.01 || *value > 100) {
      return Status::error(where.error(line_of(*cpu), "cpu",
                                       fmt::format("must be a number between 0.01 and 100 (function \"{}\")", label)));
    }
    config.cpu = *value;
  }
  if (const toml::node* hosts = fn.get("allowed_outbound_hosts")) {
    const toml::array* list = hosts->as_array();
    if (list == nullptr) {
      return Status::error(where.error(line_of(*hosts), "allowed_outbound_hosts",
                                       fmt::format("must be an array of strings (function \"{}\")", label)));
    }
    for (const toml::node& item : *list) {
      if (!item.is_string()) {
        return Status::error(where.error(line_of(item), "allowed_outbound_hosts",
                                         fmt::format("must be an array of strings (function \"{}\")", label)));
      }
      Result<AllowedHost> rule = parse_allowed_host(item.value<std::string>().value_or(""));
      if (!rule) {
        return Status::error(where.error(line_of(item), "allowed_outbound_hosts",
                                         fmt::format("{} (function \"{}\")", rule.message(), label)));
      }
      config.allowed_outbound_hosts.push_back(std::move(*rule));
    }
  }
  if (const toml::node* volumes = fn.get("volume")) {
    const toml::array* list = volumes->as_array();
    if (list == nullptr) {
      return Status::error(where.error(line_of(*volumes), "volume",
                                       fmt::format("must be an array of tables, [[function.volume]] (function \"{}\")", label)));
    }
    std::set<std::string> mounts, names;
    for (const toml::node& item : *list) {
      if (!item.is_table()) {
        return Status::error(where.error(line_of(item), "volume",
                                         fmt::format("must be a table (function \"{}\")", label)));
      }
      Result<Volume> volume = parse_volume(*item.as_table(), where, base_dir, label);
      if (!volume) return volume.status();
      for (const std::string& other : mounts) {
        const std::string& mine = volume->mount;
        auto inside = [](const std::string& a, const std::string& b) {
          return a == b || (a.size() > b.size() && a.compare(0, b.size(), b) == 0 && a[b.size()] == '/');
        };
        if (inside(mine, other) || inside(other, mine)) {
          return Status::error(where.error(line_of(item), "volume.mount",
                                           fmt::format("{} overlaps the volume at {} (function \"{}\")", mine, other, label)));
        }
      }
      if (volume->kind == Volume::Kind::kPersistent && !names.insert(volume->name).second) {
        return Status::error(where.error(line_of(item), "volume.name",
                                         fmt::format("\"{}\" is used twice (function \"{}\")", volume->name, label)));
      }
      mounts.insert(volume->mount);
      config.volumes.push_back(std::move(*volume));
    }
  }
  if (const toml::node* kind = fn.get("kind")) {
    std::string value = kind->value<std::string>().value_or("");
    if (!kind->is_string() || (value != "asgi" && value != "handler")) {
      return Status::error(where.error(line_of(*kind), "kind",
                                       fmt::format("must be \"asgi\" or \"handler\" (function \"{}\")", label)));
    }
    config.kind = value == "asgi" ? Kind::kAsgi : Kind::kHandler;
  }
  if (const toml::node* in_path = fn.get("root_path_in_path")) {
    if (!in_path->is_boolean()) {
      return Status::error(where.error(line_of(*in_path), "root_path_in_path",
                                       fmt::format("must be true or false (function \"{}\")", label)));
    }
    config.root_path_in_path = in_path->value<bool>().value_or(true);
  }
  if (const toml::node* persistent = fn.get("persistent")) {
    if (!persistent->is_boolean()) {
      return Status::error(where.error(line_of(*persistent), "persistent",
                                       fmt::format("must be true or false (function \"{}\")", label)));
    }
    config.persistent = persistent->value<bool>().value_or(false);
    if (config.persistent && config.min_instances == 0) config.min_instances = 1;
  }
  if (config.min_instances > config.max_instances) {
    return Status::error(where.error(
        line_of(*fn.get("min_instances")), "min_instances",
        fmt::format("{} is more than max_instances {} (function \"{}\")", config.min_instances,
                    config.max_instances, label)));
  }

  if (const toml::node* env = fn.get("environment")) {
    if (!env->is_table()) {
      return Status::error(where.error(line_of(*env), "environment",
                                       fmt::format("must be a table (function \"{}\")", label)));
    }
    for (const auto& [key, value] : *env->as_table()) {
      std::string k(key.str());
      if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
        return Status::error(where.error(line_of(value), "environment",
                                         fmt::format("invalid variable name \"{}\"", k)));
      }
      if (!value.is_string()) {
        return Status::error(where.error(
            line_of(value), "environment." + k,
            fmt::format("must be a string (function \"{}\")", label)));
      }
      config.environment.emplace_back(k, value.value<std::string>().value_or(""));
    }
  }
  return config;
}

}  // namespace

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kHandler: return "handler";
    case Kind::kAsgi: return "asgi";
    case Kind::kAuto: break;
  }
  return "auto";
}

bool is_valid_name(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

Status validate_entrypoint(const std::string& entrypoint) {
  auto colon = entrypoint.find(':');
  if (colon == std::string::npos) return Status::error("must be \"module:attribute\"");
  std::string_view module(entrypoint.data(), colon);
  std::string_view attr(entrypoint.data() + colon + 1, entrypoint.size() - colon - 1);
  size_t start = 0;
  while (true) {
    size_t dot = module.find('.', start);
    std::string_view part = module.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (!is_identifier(part)) return Status::error(fmt::format("\"{}\" is not a module path", module));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (!is_identifier(attr)) return Status::error(fmt::format("\"{}\" is not an attribute name", attr));
  return Status::ok();
}

Status validate_route(const std::string& route) {
  if (route.empty() || route[0] != '/') return Status::error("must start with '/'");
  for (unsigned char c : route) {
    if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#' || c == '%') {
      return Status::error(fmt::format("\"{}\" contains a character not allowed in a route", route));
    }
  }
  std::string_view r(route);
  bool wildcard = r.size() >= 4 && r.substr(r.size() - 4) == "/...";
  std::string_view fixed = wildcard ? r.substr(0, r.size() - 4) : r;
  if (fixed.find("...") != std::string_view::npos) {
    return Status::error("\"...\" is only allowed as the last segment (\"/prefix/...\")");
  }
  if (r.find("//") != std::string_view::npos) return Status::error("contains an empty segment");
  // ":name" segments capture a path segment (Spin >= 2.5; router/route_table.h).
  // Two names that give the same header (router::capture_header) are the
  // same name.
  std::vector<std::string> headers;
  for (size_t colon = fixed.find("/:"); colon != std::string_view::npos; colon = fixed.find("/:", colon + 1)) {
    size_t end = fixed.find('/', colon + 1);
    std::string_view name = fixed.substr(colon + 2, end == std::string_view::npos ? end : end - colon - 2);
    bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
      return ascii::is_alnum(c) || c == '_' || c == '-';
    });
    if (!valid) {
      return Status::error(fmt::format("\"{}\": a capture segment is \":\" and a name of letters, digits, '_' "
                                       "and '-' (\":{}\" is not)", route, name));
    }
    std::string header = router::capture_header(name);
    if (std::find(headers.begin(), headers.end(), header) != headers.end()) {
      return Status::error(fmt::format("\"{}\": the capture \":{}\" appears twice (names are compared as the "
                                       "header {}: case and '_'/'-' do not count)",
                                       route, name, header));
    }
    headers.push_back(std::move(header));
  }
  for (std::string_view seg : {std::string_view("/../"), std::string_view("/./")}) {
    std::string padded = std::string(fixed) + "/";
    if (padded.find(seg) != std::string::npos) return Status::error("contains a '.' or '..' segment");
  }
  return Status::ok();
}

Result<Manifest> parse_manifest(const std::string& text, const std::string& path) {
  Where where{path};
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return Status::error(fmt::format("{}:{}: toml: {}", path, e.source().begin.line, e.description()));
  }

  Manifest manifest;
  manifest.path = path;
  fs::path base_dir = fs::absolute(fs::path(path)).parent_path();

  for (const auto& [key, node] : root) {
    if (key.str() != "function") {
      return Status::error(where.error(line_of(node), key.str(), "unknown key (expected [[function]])"));
    }
  }
  const toml::node* functions = root.get("function");
  if (functions == nullptr) return Status::error(where.error(1, "function", "no [[function]] declared"));
  if (!functions->is_array_of_tables()) {
    return Status::error(where.error(line_of(*functions), "function", "must be an array of tables ([[function]])"));
  }

  std::set<std::string> names;
  std::map<std::string, std::string> routes;  // by router::route_shape: capture names do not count
  for (const toml::node& node : *functions->as_array()) {
    Result<FunctionConfig> fn = parse_function(*node.as_table(), where, base_dir);
    if (!fn) return fn.status();
    int64_t line = line_of(*node.as_table()->get("name"));
    if (!names.insert(fn->name).second) {
      return Status::error(where.error(line, "name", fmt::format("\"{}\" is declared twice", fn->name)));
    }
    if (auto [other, added] = routes.emplace(router::route_shape(fn->route), fn->route); !added) {
      std::string same = other->second == fn->route ? "" : fmt::format(" (as \"{}\" is: capture names do not count)",
                                                                        other->second);
      return Status::error(where.error(line_of(*node.as_table()->get("route")), "route",
                                       fmt::format("\"{}\" is already the route of another function{}",
                                                   fn->route, same)));
    }
    manifest.functions.push_back(std::move(*fn));
  }
  return manifest;
}

Result<Manifest> load_manifest(const std::string& path) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) return Status::error(fmt::format("{}:0: manifest: no such directory", path));
  std::string file = path;
  if (fs::is_directory(status)) {
    file = (fs::path(path) / "coil.toml").string();
    if (!fs::exists(file, ec)) {
      return Status::error(fmt::format("{}:0: manifest: no coil.toml here; write one, or name the entrypoint "
                                       "(MODULE:ATTR, after the directory) to serve it without one",
                                       file));
    }
  } else if (fs::path(path).extension() != ".toml") {
    return Status::error(fmt::format("{}:0: manifest: not a directory (coil up DIR [MODULE:ATTR])", path));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::error(fmt::format("{}:0: manifest: cannot read the file", file));
  std::stringstream text;
  text << in.rdbuf();
  return parse_manifest(text.str(), file);
}

Result<Manifest> single_function(const std::string& dir, const std::string& entrypoint) {
  std::error_code ec;
  fs::path canonical = fs::canonical(dir, ec);
  if (ec || !fs::is_directory(canonical)) {
    return Status::error(fmt::format("{}:0: source: not a directory", dir));
  }
  if (Status s = validate_entrypoint(entrypoint); !s) {
    return Status::error(fmt::format("{}:0: entrypoint: {}", dir, s.message()));
  }
  FunctionConfig fn;
  std::string base = canonical.filename().string();
  for (char& c : base) {
    c = ascii::is_alnum(c) ? ascii::lower(c) : '-';
  }
  fn.name = is_valid_name(base) ? base : "app";
  fn.entrypoint = entrypoint;
  fn.source = canonical.string();
  fn.route = "/...";
  fn.entrypoint_origin = fmt::format("{}:0", dir);
  Manifest manifest;
  manifest.functions.push_back(std::move(fn));
  return manifest;
}

}  // namespace coil::config
