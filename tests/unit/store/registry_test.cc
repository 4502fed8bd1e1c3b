#include "store/registry.h"

#include <gtest/gtest.h>

#include "store_test_support.h"

namespace coil::store {
namespace {

using testing::TempDir;

VersionRecord version_of(const std::string& name, const std::string& tree, const std::string& entrypoint = "") {
  VersionRecord version;
  version.name = name;
  version.tree = tree;
  version.entrypoint = entrypoint;
  version.kind = "handler";
  version.id = version_id(tree, name, entrypoint);
  return version;
}

std::unique_ptr<Registry> open_in(const TempDir& dir) {
  Result<std::unique_ptr<Registry>> registry = Registry::open(dir / "registry.sqlite3");
  EXPECT_TRUE(registry.is_ok()) << (registry.is_ok() ? "" : registry.message());
  return registry.is_ok() ? std::move(*registry) : nullptr;
}

TEST(VersionIdTest, DependsOnTreeNameAndEntrypointOnly) {
  std::string tree(64, 'a');
  EXPECT_EQ(version_id(tree, "hello", ""), version_id(tree, "hello", ""));
  EXPECT_EQ(version_id(tree, "hello", "").size(), 64u);
  EXPECT_NE(version_id(tree, "hello", ""), version_id(std::string(64, 'b'), "hello", ""));
  EXPECT_NE(version_id(tree, "hello", ""), version_id(tree, "other", ""));
  EXPECT_NE(version_id(tree, "hello", ""), version_id(tree, "hello", "main:app"));
  // Fields are separated: moving bytes between them changes the id.
  EXPECT_NE(version_id(tree, "ab", "c:d"), version_id(tree, "a", "bc:d"));
}

TEST(RegistryTest, RecordsVersionsOnceAndPointsNames) {
  TempDir dir;
  auto registry = open_in(dir);
  ASSERT_TRUE(registry);
  VersionRecord one = version_of("hello", std::string(64, '1'));
  Result<VersionRecord> stored = registry->add_version(one);
  ASSERT_TRUE(stored.is_ok()) << stored.message();
  EXPECT_EQ(stored->id, one.id);
  EXPECT_FALSE(stored->created_at.empty());
  // Adding it again keeps the first record.
  Result<VersionRecord> again = registry->add_version(one);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->sequence, stored->sequence);

  Result<std::optional<VersionRecord>> none = registry->current_version("hello");
  ASSERT_TRUE(none.is_ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(registry->point({{"hello", one.id}}).is_ok());
  Result<std::optional<VersionRecord>> current = registry->current_version("hello");
  ASSERT_TRUE(current.is_ok() && current->has_value());
  EXPECT_EQ((*current)->id, one.id);
  EXPECT_EQ((*current)->kind, "handler");
}

TEST(RegistryTest, PointingToAnUnknownVersionChangesNothing) {
  TempDir dir;
  auto registry = open_in(dir);
  ASSERT_TRUE(registry);
  VersionRecord a = version_of("a", std::string(64, '1'));
  ASSERT_TRUE(registry->add_version(a).is_ok());
  ASSERT_TRUE(registry->point({{"a", a.id}}).is_ok());
  VersionRecord b = version_of("b", std::string(64, '2'));
  ASSERT_TRUE(registry->add_version(b).is_ok());
  // All or none: the second pointer is refused (no such version), so the first is not applied.
  Status s = registry->point({{"b", b.id}, {"a", std::string(64, 'f')}});
  EXPECT_FALSE(s.is_ok());
  Result<std::optional<VersionRecord>> current_b = registry->current_version("b");
  ASSERT_TRUE(current_b.is_ok());
  EXPECT_FALSE(current_b->has_value());
  EXPECT_EQ((*registry->current_version("a"))->id, a.id);
}

TEST(RegistryTest, PreviousVersionFollowsTheHistoryOfTheName) {
  TempDir dir;
  auto registry = open_in(dir);
  ASSERT_TRUE(registry);
  VersionRecord one = version_of("app", std::string(64, '1'));
  VersionRecord two = version_of("app", std::string(64, '2'));
  ASSERT_TRUE(registry->add_version(one).is_ok());
  EXPECT_FALSE(registry->previous_version("app")->has_value());
  ASSERT_TRUE(registry->point({{"app", one.id}}).is_ok());
  EXPECT_FALSE(registry->previous_version("app")->has_value());
  ASSERT_TRUE(registry->add_version(two).is_ok());
  ASSERT_TRUE(registry->point({{"app", two.id}}).is_ok());
  EXPECT_EQ((*registry->previous_version("app"))->id, one.id);
  // Old code deployed again is current; before it came `two`, not `one`.
  ASSERT_TRUE(registry->point({{"app", one.id}}).is_ok());
  EXPECT_EQ((*registry->previous_version("app"))->id, two.id);
}

TEST(RegistryTest, FindsVersionsByPrefixAndListsNewestFirst) {
  TempDir dir;
  auto registry = open_in(dir);
  ASSERT_TRUE(registry);
  VersionRecord one = version_of("app", std::string(64, '1'));
  VersionRecord two = version_of("app", std::string(64, '2'));
  ASSERT_TRUE(registry->add_version(one).is_ok());
  ASSERT_TRUE(registry->add_version(two).is_ok());
  Result<std::vector<VersionRecord>> all = registry->versions("app");
  ASSERT_TRUE(all.is_ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, two.id);
  EXPECT_EQ((*all)[1].id, one.id);
  EXPECT_EQ(registry->find_versions("app", one.id.substr(0, 8))->size(), 1u);
  EXPECT_EQ(registry->find_versions("app", "")->size(), 2u);
  EXPECT_TRUE(registry->find_versions("other", one.id.substr(0, 8))->empty());
}

TEST(RegistryTest, RemoveForgetsTheNameAndItsVersionsAndSurvivesReopening) {
  TempDir dir;
  {
    auto registry = open_in(dir);
    ASSERT_TRUE(registry);
    VersionRecord kept = version_of("kept", std::string(64, 'c'));
    VersionRecord gone = version_of("gone", std::string(64, 'd'));
    ASSERT_TRUE(registry->add_version(kept).is_ok());
    ASSERT_TRUE(registry->add_version(gone).is_ok());
    ASSERT_TRUE(registry->point({{"kept", kept.id}, {"gone", gone.id}}).is_ok());
    Result<bool> removed = registry->remove("gone");
    ASSERT_TRUE(removed.is_ok());
    EXPECT_TRUE(*removed);
    EXPECT_FALSE(*registry->remove("gone"));
  }
  auto reopened = open_in(dir);
  ASSERT_TRUE(reopened);
  Result<std::vector<VersionRecord>> current = reopened->current_versions();
  ASSERT_TRUE(current.is_ok());
  ASSERT_EQ(current->size(), 1u);
  EXPECT_EQ((*current)[0].name, "kept");
  EXPECT_TRUE(reopened->versions("gone")->empty());
  EXPECT_EQ(*reopened->trees_in_use(), std::vector<std::string>{std::string(64, 'c')});
}

TEST(RegistryTest, OpeningSomethingThatIsNotADatabaseFails) {
  TempDir dir;
  testing::write_file(dir / "registry.sqlite3", "this is not SQLite, but long enough to be read as a header......\n");
  Result<std::unique_ptr<Registry>> registry = Registry::open(dir / "registry.sqlite3");
  ASSERT_FALSE(registry.is_ok());
  EXPECT_NE(registry.message().find("registry.sqlite3"), std::string::npos) << registry.message();
}

}  // namespace
}  // namespace coil::store
