#include "store/registry.h"

#include <sqlite3.h>

#include <chrono>
#include <ctime>

#include "store/tree_digest.h"

namespace coil::store {
namespace {

constexpr const char* kSchema = R"sql(
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS versions (
  sequence INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  tree TEXT NOT NULL,
  entrypoint TEXT NOT NULL,
  kind TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_name ON versions(name, sequence);
CREATE TABLE IF NOT EXISTS functions (
  name TEXT PRIMARY KEY,
  version TEXT NOT NULL REFERENCES versions(id)
);
CREATE TABLE IF NOT EXISTS history (
  sequence INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  version TEXT NOT NULL
);
)sql";

constexpr const char* kVersionColumns =
    "v.sequence, v.id, v.name, v.tree, v.entrypoint, v.kind, v.created_at";

std::string now_utc() {
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// A prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK) statement_ = nullptr;
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return statement_ != nullptr; }
  Statement& bind(int index, const std::string& value) {
    sqlite3_bind_text(statement_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // SQLITE_ROW or SQLITE_DONE, else an error code.
  int step() { return sqlite3_step(statement_); }
  std::string text(int column) const {
    const unsigned char* value = sqlite3_column_text(statement_, column);
    return value == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(value));
  }
  int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }
  Status error(const std::string& what) const {
    return Status::error("registry: " + what + ": " + sqlite3_errmsg(db_));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

VersionRecord read_version(const Statement& row) {
  VersionRecord version;
  version.sequence = row.integer(0);
  version.id = row.text(1);
  version.name = row.text(2);
  version.tree = row.text(3);
  version.entrypoint = row.text(4);
  version.kind = row.text(5);
  version.created_at = row.text(6);
  return version;
}

// Runs a SELECT of version columns; every row.
Result<std::vector<VersionRecord>> select_versions(sqlite3* db, const std::string& sql,
                                                   const std::vector<std::string>& parameters) {
  Statement statement(db, sql.c_str());
  if (!statement.ok()) return statement.error("query");
  for (size_t i = 0; i < parameters.size(); ++i) statement.bind(static_cast<int>(i + 1), parameters[i]);
  std::vector<VersionRecord> versions;
  int rc;
  while ((rc = statement.step()) == SQLITE_ROW) versions.push_back(read_version(statement));
  if (rc != SQLITE_DONE) return statement.error("query");
  return versions;
}

Result<std::optional<VersionRecord>> first(Result<std::vector<VersionRecord>> rows) {
  if (!rows) return rows.status();
  if (rows->empty()) return std::optional<VersionRecord>();
  return std::optional<VersionRecord>(std::move(rows->front()));
}

}  // namespace

std::string version_id(const std::string& tree, const std::string& name, const std::string& entrypoint) {
  Sha256 hash;
  hash.update("coil version 1");
  hash.update(std::string_view("\0", 1));
  hash.update(tree);
  hash.update(std::string_view("\0", 1));
  hash.update(name);
  hash.update(std::string_view("\0", 1));
  hash.update(entrypoint);
  return to_hex(hash.finish());
}

Result<std::unique_ptr<Registry>> Registry::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Status::error("cannot open the registry " + path + ": " + message);
  }
  std::unique_ptr<Registry> registry(new Registry(db));
  sqlite3_busy_timeout(db, 5000);
  if (Status s = registry->exec(kSchema); !s) {
    return Status::error("cannot open the registry " + path + ": " + s.message());
  }
  return registry;
}

Registry::~Registry() { sqlite3_close(db_); }

Status Registry::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : sqlite3_errmsg(db_);
    sqlite3_free(error);
    return Status::error("registry: " + message);
  }
  return Status::ok();
}

Result<VersionRecord> Registry::add_version(VersionRecord version) {
  {
    Statement insert(db_,
                     "INSERT OR IGNORE INTO versions (id, name, tree, entrypoint, kind, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)");
    if (!insert.ok()) return insert.error("add version");
    insert.bind(1, version.id).bind(2, version.name).bind(3, version.tree).bind(4, version.entrypoint);
    insert.bind(5, version.kind).bind(6, now_utc());
    if (insert.step() != SQLITE_DONE) return insert.error("add version");
  }
  Result<std::optional<VersionRecord>> stored = this->version(version.id);
  if (!stored) return stored.status();
  if (!*stored) return Status::error("registry: version " + version.id + " vanished");
  return std::move(**stored);
}

Status Registry::point(const std::vector<std::pair<std::string, std::string>>& name_to_version) {
  if (Status s = exec("BEGIN IMMEDIATE"); !s) return s;
  for (const auto& [name, id] : name_to_version) {
    Statement upsert(db_,
                     "INSERT INTO functions (name, version) VALUES (?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET version = excluded.version");
    if (!upsert.ok() || upsert.bind(1, name).bind(2, id).step() != SQLITE_DONE) {
      Status error = upsert.error("point " + name);
      (void)exec("ROLLBACK");
      return error;
    }
    Statement history(db_, "INSERT INTO history (name, version) VALUES (?, ?)");
    if (!history.ok() || history.bind(1, name).bind(2, id).step() != SQLITE_DONE) {
      Status error = history.error("point " + name);
      (void)exec("ROLLBACK");
      return error;
    }
  }
  return exec("COMMIT");
}

Result<bool> Registry::remove(const std::string& name) {
  if (Status s = exec("BEGIN IMMEDIATE"); !s) return s;
  Statement forget(db_, "DELETE FROM functions WHERE name = ?");
  if (!forget.ok() || forget.bind(1, name).step() != SQLITE_DONE) {
    Status error = forget.error("remove " + name);
    (void)exec("ROLLBACK");
    return error;
  }
  bool existed = sqlite3_changes(db_) > 0;
  for (const char* sql : {"DELETE FROM versions WHERE name = ?", "DELETE FROM history WHERE name = ?"}) {
    Statement forget_rows(db_, sql);
    if (!forget_rows.ok() || forget_rows.bind(1, name).step() != SQLITE_DONE) {
      Status error = forget_rows.error("remove " + name);
      (void)exec("ROLLBACK");
      return error;
    }
  }
  if (Status s = exec("COMMIT"); !s) return s;
  return existed;
}

Result<std::vector<VersionRecord>> Registry::current_versions() {
  return select_versions(db_,
                         std::string("SELECT ") + kVersionColumns +
                             " FROM functions f JOIN versions v ON v.id = f.version ORDER BY f.name",
                         {});
}

Result<std::optional<VersionRecord>> Registry::current_version(const std::string& name) {
  return first(select_versions(db_,
                               std::string("SELECT ") + kVersionColumns +
                                   " FROM functions f JOIN versions v ON v.id = f.version "
                                   "WHERE f.name = ?",
                               {name}));
}

Result<std::vector<VersionRecord>> Registry::versions(const std::string& name) {
  return select_versions(
      db_,
      std::string("SELECT ") + kVersionColumns + " FROM versions v WHERE v.name = ? ORDER BY v.sequence DESC",
      {name});
}

Result<std::optional<VersionRecord>> Registry::version(const std::string& id) {
  return first(select_versions(
      db_, std::string("SELECT ") + kVersionColumns + " FROM versions v WHERE v.id = ?", {id}));
}

Result<std::vector<VersionRecord>> Registry::find_versions(const std::string& name, const std::string& prefix) {
  Result<std::vector<VersionRecord>> all = versions(name);
  if (!all) return all.status();
  std::vector<VersionRecord> matches;
  for (VersionRecord& version : *all) {
    if (version.id.compare(0, prefix.size(), prefix) == 0) matches.push_back(std::move(version));
  }
  return matches;
}

Result<std::optional<VersionRecord>> Registry::previous_version(const std::string& name) {
  return first(select_versions(db_,
                               std::string("SELECT ") + kVersionColumns +
                                   " FROM history h JOIN versions v ON v.id = h.version WHERE h.name = ? AND "
                                   "h.version != (SELECT version FROM functions WHERE name = ?) "
                                   "ORDER BY h.sequence DESC LIMIT 1",
                               {name, name}));
}

Result<std::vector<std::string>> Registry::trees_in_use() {
  Statement statement(db_, "SELECT DISTINCT tree FROM versions");
  if (!statement.ok()) return statement.error("trees");
  std::vector<std::string> trees;
  int rc;
  while ((rc = statement.step()) == SQLITE_ROW) trees.push_back(statement.text(0));
  if (rc != SQLITE_DONE) return statement.error("trees");
  return trees;
}

}  // namespace coil::store
