// Registry: what coil server knows about deployed functions, in SQLite
// (DATA/registry.sqlite3): every version ever deployed, and which version
// each function name serves.
//
// A version is immutable: its id is derived from its code tree and how it is
// deployed (see version_id()), and its row never changes. A name points to
// one version; deploy and rollback move the pointer, in one transaction, so
// a reader sees either the old version or the new one, never a mix.
//
// Thread-safety: none; the server uses it from its event loop only. Every
// call is a short local transaction (WAL mode), which is why it can run there.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

struct sqlite3;

namespace coil::store {

struct VersionRecord {
  std::string id;          // 64 hex digits
  std::string name;        // the function's name
  std::string tree;        // the code tree's digest (64 hex): DATA/code/<tree>/
  std::string entrypoint;  // "" when the function is declared in the tree's coil.toml
  std::string kind;        // "handler" or "asgi", as detected when it was deployed
  std::string created_at;  // UTC, ISO 8601
  int64_t sequence = 0;    // deploy order across the registry
};

// The version id: SHA-256 over the tree digest and the deploy parameters
// (name, entrypoint), so the same code deployed the same way gets the same id.
std::string version_id(const std::string& tree, const std::string& name, const std::string& entrypoint);

class Registry {
 public:
  // Opens (creating if needed) the database at `path`.
  static Result<std::unique_ptr<Registry>> open(const std::string& path);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Records a version (kept as it was if its id is known already), with
  // created_at and sequence filled in.
  Result<VersionRecord> add_version(VersionRecord version);
  // Points each name to its version, all or none; each move is kept in the
  // name's history (for rollback).
  Status point(const std::vector<std::pair<std::string, std::string>>& name_to_version);
  // Forgets a function: its name and every version of it. Returns false if
  // there was no such function.
  Result<bool> remove(const std::string& name);

  // Every function and the version it serves, by name.
  Result<std::vector<VersionRecord>> current_versions();
  Result<std::optional<VersionRecord>> current_version(const std::string& name);
  // The versions of `name`, newest first.
  Result<std::vector<VersionRecord>> versions(const std::string& name);
  Result<std::optional<VersionRecord>> version(const std::string& id);
  // The versions of `name` whose ids start with `prefix` (lower-case hex).
  Result<std::vector<VersionRecord>> find_versions(const std::string& name, const std::string& prefix);
  // What `name` pointed to before it pointed to its current version (by its
  // history, so a redeploy of old code counts as new); nullopt if nothing.
  Result<std::optional<VersionRecord>> previous_version(const std::string& name);
  // Every code tree some version uses (for collecting the others).
  Result<std::vector<std::string>> trees_in_use();

 private:
  explicit Registry(sqlite3* db) : db_(db) {}
  Status exec(const char* sql);
  sqlite3* db_;
};

}  // namespace coil::store
