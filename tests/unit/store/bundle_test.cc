// Unit tests for bundles: unpacking untrusted archives (and refusing bad
// ones), .coilignore rules, and reproducible packing.
#include "store/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "store/tree_digest.h"
#include "store_test_support.h"

namespace coil::store {
namespace {

// '"' + path + '"', built by appending (GCC 12 warns falsely, -Wrestrict, on operator+ chains).
std::string quoted(const std::string& text) { return std::string("\"").append(text).append("\""); }

namespace fs = std::filesystem;
using testing::contains;
using testing::make_symlink;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

// Writes archives with libarchive, including entries that unpack_bundle must
// refuse (absolute paths, "..", links, devices): the writer does not judge.
class ArchiveBuilder {
 public:
  explicit ArchiveBuilder(bool gzip = true) : writer_(archive_write_new(), archive_write_free) {
    if (gzip) archive_write_add_filter_gzip(writer_.get());
    archive_write_set_format_pax_restricted(writer_.get());
    archive_write_open2(writer_.get(), &output_, nullptr, &ArchiveBuilder::append, nullptr, nullptr);
  }

  ArchiveBuilder& file(const std::string& name, const std::string& content, mode_t perm = 0644) {
    return add(name, AE_IFREG, perm, content);
  }
  ArchiveBuilder& directory(const std::string& name, mode_t perm = 0755) { return add(name, AE_IFDIR, perm); }
  ArchiveBuilder& symlink(const std::string& name, const std::string& target) {
    return add(name, AE_IFLNK, 0777, "", target);
  }
  ArchiveBuilder& hardlink(const std::string& name, const std::string& target) {
    return add(name, AE_IFREG, 0644, "", "", target);
  }
  ArchiveBuilder& special(const std::string& name, mode_t type) { return add(name, type, 0644); }

  std::string finish() {
    EXPECT_EQ(archive_write_close(writer_.get()), ARCHIVE_OK) << archive_error_string(writer_.get());
    return output_;
  }

 private:
  static la_ssize_t append(archive*, void* client, const void* buffer, size_t length) {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
    return static_cast<la_ssize_t>(length);
  }

  ArchiveBuilder& add(const std::string& name, mode_t type, mode_t perm, const std::string& content = "",
                      const std::string& symlink = "", const std::string& hardlink = "") {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(entry.get(), name.c_str());
    archive_entry_set_filetype(entry.get(), type);
    archive_entry_set_perm(entry.get(), perm);
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
    if (!symlink.empty()) archive_entry_set_symlink(entry.get(), symlink.c_str());
    if (!hardlink.empty()) archive_entry_set_hardlink(entry.get(), hardlink.c_str());
    if (type == AE_IFCHR) archive_entry_set_rdev(entry.get(), makedev(1, 3));
    EXPECT_EQ(archive_write_header(writer_.get(), entry.get()), ARCHIVE_OK)
        << name << ": " << archive_error_string(writer_.get());
    if (!content.empty()) {
      EXPECT_EQ(archive_write_data(writer_.get(), content.data(), content.size()),
                static_cast<la_ssize_t>(content.size()));
    }
    return *this;
  }

  std::unique_ptr<archive, int (*)(archive*)> writer_;
  std::string output_;
};

struct ReadEntry {
  std::string path;
  mode_t type;
  mode_t perm;
  int64_t mtime;
  int64_t uid;
  int64_t gid;
  std::string uname;
  std::string gname;
};

// What libarchive reads back from a packed bundle.
std::vector<ReadEntry> list_archive(const std::string& bytes) {
  std::vector<ReadEntry> entries;
  std::unique_ptr<archive, int (*)(archive*)> reader(archive_read_new(), archive_read_free);
  archive_read_support_filter_all(reader.get());
  archive_read_support_format_all(reader.get());
  EXPECT_EQ(archive_read_open_memory(reader.get(), bytes.data(), bytes.size()), ARCHIVE_OK);
  archive_entry* entry = nullptr;
  while (archive_read_next_header(reader.get(), &entry) == ARCHIVE_OK) {
    const char* uname = archive_entry_uname(entry);
    const char* gname = archive_entry_gname(entry);
    std::string path = archive_entry_pathname(entry);
    if (!path.empty() && path.back() == '/') path.pop_back();
    entries.push_back({path, archive_entry_filetype(entry), archive_entry_perm(entry),
                       archive_entry_mtime(entry), archive_entry_uid(entry), archive_entry_gid(entry),
                       uname ? uname : "", gname ? gname : ""});
  }
  return entries;
}

std::string random_bytes(size_t size) {
  std::mt19937 generator(42);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(generator() & 0xff);
  return out;
}

Digest digest_of(const std::string& root) {
  Result<Digest> digest = digest_tree(root);
  EXPECT_TRUE(digest.is_ok()) << digest.message();
  return digest.is_ok() ? digest.value() : Digest{};
}

mode_t mode_of(const std::string& path) {
  struct stat info {};
  EXPECT_EQ(::lstat(path.c_str(), &info), 0) << path;
  return info.st_mode & 07777;
}

class UnpackTest : public ::testing::Test {
 protected:
  // Unpacks `bytes`, which must be refused, and checks that nothing is left.
  std::string refusal(const std::string& bytes, const BundleLimits& limits = {}) {
    Result<UnpackedBundle> result = unpack_bundle(bytes, destination_, limits);
    EXPECT_FALSE(result.is_ok()) << "the archive was accepted";
    EXPECT_FALSE(fs::exists(fs::symlink_status(destination_))) << "the destination was left behind";
    EXPECT_FALSE(fs::exists(fs::symlink_status(temp_ / "versions/x"))) << "a file was written outside";
    return result.is_ok() ? std::string() : result.message();
  }

  TempDir temp_;
  std::string destination_ = temp_ / "versions/code";
};

TEST_F(UnpackTest, ExtractsFilesDirectoriesAndLinksWithNormalizedModes) {
  std::string bytes = ArchiveBuilder()
                          .directory("./")
                          .file("./app.py", "print('hi')\n", 0600)
                          .file("bin/tool", "#!/bin/sh\n", 0700)
                          .file("bin/setuid", "x", 04755)
                          .directory("private", 0700)
                          .file("private/data", "", 0400)
                          .file("deep/er/file.txt", "abc", 0644)
                          .symlink("lib", "bin")
                          .symlink("deep/er/up", "../../app.py")
                          .symlink("same", "bin/./../deep/er")
                          .finish();
  Result<UnpackedBundle> result = unpack_bundle(bytes, destination_);
  ASSERT_TRUE(result.is_ok()) << result.message();
  EXPECT_EQ(result->files, 5u);
  EXPECT_EQ(result->bytes, 12u + 10u + 1u + 0u + 3u);

  EXPECT_EQ(read_file(destination_ + "/app.py"), "print('hi')\n");
  EXPECT_EQ(mode_of(destination_ + "/app.py"), 0644u);
  EXPECT_EQ(mode_of(destination_ + "/bin/tool"), 0755u);
  EXPECT_EQ(mode_of(destination_ + "/bin/setuid"), 0755u);
  EXPECT_EQ(mode_of(destination_ + "/private"), 0755u);
  EXPECT_EQ(mode_of(destination_ + "/private/data"), 0644u);
  EXPECT_EQ(mode_of(destination_ + "/deep"), 0755u);
  EXPECT_EQ(mode_of(destination_), 0755u);
  EXPECT_EQ(fs::read_symlink(destination_ + "/lib"), "bin");
  EXPECT_EQ(read_file(destination_ + "/deep/er/up"), "print('hi')\n");
  EXPECT_TRUE(fs::is_directory(destination_ + "/same"));
}

TEST_F(UnpackTest, AcceptsAnUncompressedTar) {
  std::string bytes = ArchiveBuilder(/*gzip=*/false).file("app.py", "x = 1\n").finish();
  Result<UnpackedBundle> result = unpack_bundle(bytes, destination_);
  ASSERT_TRUE(result.is_ok()) << result.message();
  EXPECT_EQ(read_file(destination_ + "/app.py"), "x = 1\n");
}

TEST_F(UnpackTest, RefusesAnExistingDestinationAndLeavesItAlone) {
  write_file(destination_ + "/keep", "mine");
  Result<UnpackedBundle> result = unpack_bundle(ArchiveBuilder().file("a", "b").finish(), destination_);
  ASSERT_FALSE(result.is_ok());
  EXPECT_TRUE(contains(result.message(), destination_));
  EXPECT_EQ(read_file(destination_ + "/keep"), "mine");
  EXPECT_FALSE(fs::exists(destination_ + "/a"));
}

TEST_F(UnpackTest, RefusesAbsolutePath) {
  std::string message = refusal(ArchiveBuilder().file("ok.py", "1").file("/etc/coil-test", "x").finish());
  EXPECT_TRUE(contains(message, "bundle: entry \"/etc/coil-test\": "));
  EXPECT_TRUE(contains(message, "absolute"));
  EXPECT_FALSE(fs::exists("/etc/coil-test"));
}

TEST_F(UnpackTest, RefusesDotDot) {
  EXPECT_EQ(refusal(ArchiveBuilder().file("../x", "x").finish()),
            "bundle: entry \"../x\": leaves the bundle (\"..\")");
}

TEST_F(UnpackTest, RefusesDotDotInsideAPath) {
  std::string message = refusal(ArchiveBuilder().file("a/b", "1").file("a/../../x", "x").finish());
  EXPECT_TRUE(contains(message, "entry \"a/../../x\": leaves the bundle"));
}

TEST_F(UnpackTest, RefusesEmptyAndRootNames) {
  EXPECT_TRUE(
      contains(refusal(ArchiveBuilder().file(".", "x").finish()), "entry \".\": names the bundle root"));
  EXPECT_TRUE(
      contains(refusal(ArchiveBuilder().symlink("./", "x").finish()), "entry \"./\": names the bundle root"));
}

TEST_F(UnpackTest, RefusesSymlinkToAnAbsolutePath) {
  std::string message = refusal(ArchiveBuilder().symlink("passwd", "/etc/passwd").finish());
  EXPECT_TRUE(contains(message, "entry \"passwd\": symbolic link to \"/etc/passwd\" is absolute"));
}

TEST_F(UnpackTest, RefusesSymlinkLeavingTheBundle) {
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().symlink("up", "../..").finish()),
                       "entry \"up\": symbolic link to \"../..\" leaves the bundle"));
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().symlink("sub/up", "../../x").finish()),
                       "entry \"sub/up\": symbolic link to \"../../x\" leaves the bundle"));
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().symlink("up", "a/../../x").finish()), "leaves the bundle"));
}

// "a/s" -> ".." stays inside, and "t" -> "a/s/.." is "a" lexically, but the
// kernel resolves it to the bundle's parent: it must be refused whichever
// of the two links comes first.
TEST_F(UnpackTest, RefusesLinkThatEscapesThroughAnotherLink) {
  std::string message =
      refusal(ArchiveBuilder().directory("a").symlink("a/s", "..").symlink("t", "a/s/..").finish());
  EXPECT_TRUE(contains(message, "entry \"t\": symbolic link to \"a/s/..\""));
  EXPECT_TRUE(contains(message, "\"a/s\""));
  message = refusal(ArchiveBuilder().symlink("t", "a/s/..").directory("a").symlink("a/s", "..").finish());
  EXPECT_TRUE(contains(message, "entry \"t\""));
  // s -> "." and y -> ".": "s/y/.." is "s" lexically, the bundle's parent really.
  message = refusal(ArchiveBuilder().symlink("s", ".").symlink("y", ".").symlink("t", "s/y/..").finish());
  EXPECT_TRUE(contains(message, "entry \"t\""));
}

TEST_F(UnpackTest, RefusesAPathThroughAnExtractedSymlink) {
  std::string message =
      refusal(ArchiveBuilder().directory("sub").symlink("link", "sub").file("link/x", "x").finish());
  EXPECT_TRUE(contains(message, "entry \"link/x\": goes through the symbolic link \"link\""));
}

TEST_F(UnpackTest, RefusesAPathThroughAFile) {
  std::string message = refusal(ArchiveBuilder().file("a", "1").file("a/b", "2").finish());
  EXPECT_TRUE(contains(message, "entry \"a/b\": goes through \"a\", which is a file"));
}

TEST_F(UnpackTest, RefusesHardLink) {
  std::string message = refusal(ArchiveBuilder().file("a", "1").hardlink("b", "a").finish());
  EXPECT_TRUE(contains(message, "entry \"b\": is a hard link (to \"a\")"));
}

TEST_F(UnpackTest, RefusesDevicesAndFifos) {
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().special("null", AE_IFCHR).finish()),
                       "entry \"null\": is a character device"));
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().special("disk", AE_IFBLK).finish()),
                       "entry \"disk\": is a block device"));
  EXPECT_TRUE(
      contains(refusal(ArchiveBuilder().special("pipe", AE_IFIFO).finish()), "entry \"pipe\": is a FIFO"));
}

TEST_F(UnpackTest, RefusesDuplicates) {
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().file("a", "1").file("a", "2").finish()),
                       "entry \"a\": appears twice in the archive"));
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().file("a", "1").file("./a", "2").finish()),
                       "entry \"./a\": appears twice"));
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().directory("d").directory("d/").finish()), "appears twice"));
  EXPECT_TRUE(contains(refusal(ArchiveBuilder().file("d/x", "1").symlink("d", "e").finish()),
                       "entry \"d\": conflicts with the directory"));
}

TEST_F(UnpackTest, RefusesAnArchiveOverTheSizeLimit) {
  std::string bytes = ArchiveBuilder().file("a", "1").finish();
  BundleLimits limits;
  limits.max_archive_bytes = bytes.size() - 1;
  std::string message = refusal(bytes, limits);
  EXPECT_TRUE(contains(message, std::to_string(bytes.size()) + " bytes"));
  EXPECT_TRUE(contains(message, "limit of " + std::to_string(bytes.size() - 1)));
  limits.max_archive_bytes = bytes.size();
  EXPECT_TRUE(unpack_bundle(bytes, destination_, limits).is_ok());
}

TEST_F(UnpackTest, RefusesExpandingPastTheByteLimit) {
  BundleLimits limits;
  limits.max_expanded_bytes = 1000;
  std::string message = refusal(
      ArchiveBuilder().file("a", std::string(600, 'a')).file("b", std::string(600, 'b')).finish(), limits);
  EXPECT_TRUE(contains(message, "entry \"b\": the bundle expands to more than 1000 bytes"));

  // A small archive that would expand a lot.
  limits.max_expanded_bytes = 1 << 20;
  std::string bomb = ArchiveBuilder().file("zeros", std::string(8 << 20, '\0')).finish();
  EXPECT_LT(bomb.size(), 64u << 10);
  EXPECT_TRUE(contains(refusal(bomb, limits), "entry \"zeros\": the bundle expands"));
}

TEST_F(UnpackTest, RefusesTooManyEntries) {
  BundleLimits limits;
  limits.max_entries = 2;
  std::string message =
      refusal(ArchiveBuilder().directory("d").file("d/a", "1").file("d/b", "2").finish(), limits);
  EXPECT_TRUE(contains(message, "entry \"d/b\": the bundle has more than 2 entries"));
}

TEST_F(UnpackTest, RefusesGarbage) {
  EXPECT_TRUE(contains(refusal("this is not an archive, just some text that is long enough to look at"),
                       "bundle: not a tar or tar.gz archive"));
  EXPECT_TRUE(contains(refusal(""), "bundle: not a tar or tar.gz archive"));
  EXPECT_TRUE(contains(refusal(random_bytes(4096)), "bundle: not a tar or tar.gz archive"));
}

TEST_F(UnpackTest, RefusesTruncatedGzip) {
  std::string bytes =
      ArchiveBuilder().file("first.py", "1").file("big.bin", random_bytes(200 << 10)).finish();
  std::string message = refusal(bytes.substr(0, bytes.size() / 2));
  EXPECT_TRUE(contains(message, "damaged or truncated"));
  EXPECT_TRUE(contains(message, "\"big.bin\""));
}

// An uncompressed tar cut at an entry boundary is a valid-looking tar
// without its end-of-archive marker: the entries after the cut must not be
// lost silently.
TEST_F(UnpackTest, RefusesTarCutAtAnEntryBoundary) {
  std::string bytes = ArchiveBuilder(/*gzip=*/false).file("a", "1").file("b", "2").finish();
  ASSERT_GE(bytes.size(), 2048u);  // header and data block for each of a and b
  std::string message = refusal(bytes.substr(0, 1024));
  EXPECT_TRUE(contains(message, "end-of-archive marker after entry \"a\""));
  EXPECT_TRUE(contains(message, "cut short"));
  EXPECT_TRUE(unpack_bundle(bytes.substr(0, 2048 + 512), destination_).is_ok());
}

TEST(IgnoreRulesTest, GitignoreLikePatterns) {
  IgnoreRules rules = IgnoreRules::parse(
      "# build output\n"
      "*.pyc\n"
      "!keep.pyc\n"
      "__pycache__\n"
      "/build\n"
      "docs/*.md\n"
      "\n"
      "logs/   \n"
      "*.tmp\r\n");

  EXPECT_TRUE(rules.ignored("a.pyc", false));
  EXPECT_TRUE(rules.ignored("pkg/deep/a.pyc", false));
  EXPECT_FALSE(rules.ignored("keep.pyc", false));
  EXPECT_FALSE(rules.ignored("pkg/keep.pyc", false));
  EXPECT_FALSE(rules.ignored("a.py", false));

  EXPECT_TRUE(rules.ignored("pkg/__pycache__", true));

  EXPECT_TRUE(rules.ignored("build", true));
  EXPECT_TRUE(rules.ignored("build/out.o", false));
  EXPECT_FALSE(rules.ignored("pkg/build", true));
  EXPECT_FALSE(rules.ignored("pkg/build/out.o", false));

  EXPECT_TRUE(rules.ignored("docs/a.md", false));
  EXPECT_FALSE(rules.ignored("docs/sub/a.md", false));
  EXPECT_FALSE(rules.ignored("other/docs/a.md", false));
  EXPECT_FALSE(rules.ignored("docs/a.txt", false));

  EXPECT_TRUE(rules.ignored("logs", true));
  EXPECT_TRUE(rules.ignored("pkg/logs", true));
  EXPECT_TRUE(rules.ignored("logs/today.log", false));
  EXPECT_FALSE(rules.ignored("logs", false));

  EXPECT_TRUE(rules.ignored("x.tmp", false));
  EXPECT_FALSE(rules.ignored("# build output", false));
}

TEST(IgnoreRulesTest, AlwaysIgnoresGitAndPycacheDirectories) {
  IgnoreRules rules = IgnoreRules::parse("!.git\n!__pycache__\n!x/.git/config\n");
  EXPECT_TRUE(rules.ignored(".git", true));
  EXPECT_TRUE(rules.ignored("x/.git", true));
  EXPECT_TRUE(rules.ignored("x/.git/config", false));
  EXPECT_TRUE(rules.ignored("__pycache__", true));
  EXPECT_TRUE(rules.ignored("pkg/__pycache__/m.cpython-311.pyc", false));
  EXPECT_FALSE(rules.ignored(".gitignore", false));
  EXPECT_FALSE(rules.ignored(".git", false));  // a submodule's .git file is a file
}

TEST(IgnoreRulesTest, NothingInsideAnIgnoredDirectoryComesBack) {
  IgnoreRules rules = IgnoreRules::parse("/build\n!build/keep\n");
  EXPECT_TRUE(rules.ignored("build/keep", false));
}

// A source tree for packing; `with_ignored` adds what .coilignore and the
// built-in rules leave out, so the tree without them is what unpacks.
void make_source(const std::string& root, bool with_ignored) {
  write_file(root + "/.coilignore", "*.pyc\n!keep.pyc\n/build\ndocs/*.md\nlogs/\n# comment\n");
  write_file(root + "/app.py", "print('hi')\n");
  write_file(root + "/run.sh", "#!/bin/sh\necho hi\n", 0755);
  write_file(root + "/keep.pyc", "kept");
  write_file(root + "/pkg/__init__.py", "");
  write_file(root + "/pkg/sub/deep.py", "x = 1\n", 0600);
  write_file(root + "/pkg/build/kept.txt", "only /build is ignored");
  write_file(root + "/pkg/logs", "a file, not a directory");
  write_file(root + "/docs/guide.txt", "guide");
  write_file(root + "/pkg/logs2/kept.txt", "kept");
  write_file(root + "/docs/sub/nested.md", "nested");
  write_file(root + "/pkg/" + std::string(120, 'n') + "/long-name-needs-a-pax-header.py", "long");
  fs::create_directories(root + "/empty");
  make_symlink("pkg/sub", root + "/current");
  make_symlink("../__init__.py", root + "/pkg/sub/init.py");
  if (!with_ignored) return;
  write_file(root + "/drop.pyc", "x");
  write_file(root + "/pkg/mod.pyc", "x");
  write_file(root + "/pkg/__pycache__/mod.cpython-311.pyc", "x");
  write_file(root + "/.git/config", "[core]\n");
  write_file(root + "/build/out.o", "x");
  write_file(root + "/docs/readme.md", "x");
  write_file(root + "/logs/today.log", "x");
  write_file(root + "/pkg/logs2/logs/x", "x");
  ASSERT_EQ(::mkfifo((root + "/logs/pipe").c_str(), 0644), 0);  // never looked at
}

TEST(PackTest, RoundTripKeepsEverythingButIgnoredFiles) {
  TempDir temp;
  make_source(temp / "source", /*with_ignored=*/true);
  make_source(temp / "expected", /*with_ignored=*/false);

  Result<std::string> packed = pack_directory(temp / "source");
  ASSERT_TRUE(packed.is_ok()) << packed.message();
  Result<UnpackedBundle> unpacked = unpack_bundle(*packed, temp / "unpacked");
  ASSERT_TRUE(unpacked.is_ok()) << unpacked.message();

  EXPECT_EQ(to_hex(digest_of(temp / "unpacked")), to_hex(digest_of(temp / "expected")));
  EXPECT_EQ(mode_of(temp / "unpacked/run.sh"), 0755u);
  EXPECT_EQ(mode_of(temp / "unpacked/pkg/sub/deep.py"), 0644u);
  EXPECT_EQ(fs::read_symlink(temp / "unpacked/current"), "pkg/sub");
  EXPECT_FALSE(fs::exists(temp / "unpacked/drop.pyc"));
  EXPECT_FALSE(fs::exists(temp / "unpacked/.git"));
  EXPECT_FALSE(fs::exists(temp / "unpacked/logs"));
  EXPECT_TRUE(fs::exists(temp / "unpacked/keep.pyc"));
}

TEST(PackTest, SameTreePacksToSameBytesWithNeutralMetadata) {
  TempDir temp;
  make_source(temp / "first", /*with_ignored=*/true);
  Result<std::string> first = pack_directory(temp / "first");
  ASSERT_TRUE(first.is_ok()) << first.message();
  Result<std::string> again = pack_directory(temp / "first");
  ASSERT_TRUE(again.is_ok()) << again.message();
  EXPECT_TRUE(*first == *again) << "packing twice gave different bytes";

  // The same tree made elsewhere, at another time.
  make_source(temp / "second", /*with_ignored=*/false);
  struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (temp / "second/app.py").c_str(), old_times, 0), 0);
  Result<std::string> second = pack_directory(temp / "second");
  ASSERT_TRUE(second.is_ok()) << second.message();
  EXPECT_TRUE(*first == *second) << "an equal tree packed to different bytes";

  // gzip's own header carries no time either (bytes 4-7, RFC 1952).
  ASSERT_GT(first->size(), 10u);
  EXPECT_EQ(first->substr(0, 2), "\x1f\x8b");
  EXPECT_EQ(first->substr(4, 4), std::string(4, '\0'));

  std::vector<ReadEntry> entries = list_archive(*first);
  ASSERT_FALSE(entries.empty());
  for (size_t i = 0; i < entries.size(); ++i) {
    const ReadEntry& entry = entries[i];
    SCOPED_TRACE(entry.path);
    if (i > 0) {
      EXPECT_LT(entries[i - 1].path, entry.path);
    }
    EXPECT_EQ(entry.mtime, 0);
    EXPECT_EQ(entry.uid, 0);
    EXPECT_EQ(entry.gid, 0);
    EXPECT_EQ(entry.uname, "");
    EXPECT_EQ(entry.gname, "");
    if (entry.type == AE_IFDIR) {
      EXPECT_EQ(entry.perm, 0755u);
    } else if (entry.type == AE_IFREG) {
      EXPECT_EQ(entry.perm, entry.path == "run.sh" ? 0755u : 0644u);
    }
  }
}

TEST(PackTest, RefusesSymlinksLeavingTheDirectory) {
  TempDir temp;
  write_file(temp / "outside", "secret");
  make_symlink("../../outside", temp / "code/sub/out");
  Result<std::string> packed = pack_directory(temp / "code");
  ASSERT_FALSE(packed.is_ok());
  EXPECT_TRUE(contains(packed.message(), "pack: \"" + (temp / "code/sub/out") + "\": symbolic link to"));
  EXPECT_TRUE(contains(packed.message(), "leaves the bundle"));

  fs::remove(temp / "code/sub/out");
  make_symlink("/etc/passwd", temp / "code/passwd");
  packed = pack_directory(temp / "code");
  ASSERT_FALSE(packed.is_ok());
  EXPECT_TRUE(contains(packed.message(), quoted(temp / "code/passwd")));
  EXPECT_TRUE(contains(packed.message(), "is absolute"));
}

TEST(PackTest, RefusesSpecialFiles) {
  TempDir temp;
  write_file(temp / "code/app.py", "1");
  ASSERT_EQ(::mkfifo((temp / "code/pipe").c_str(), 0644), 0);
  Result<std::string> packed = pack_directory(temp / "code");
  ASSERT_FALSE(packed.is_ok());
  EXPECT_TRUE(contains(packed.message(), quoted(temp / "code/pipe").append(": is a FIFO")));
}

// Root reads any file, so when the tests run as root the packing happens in
// a child that has dropped to an unprivileged user.
std::string pack_error_without_privileges(const std::string& directory) {
  if (::geteuid() != 0) {
    Result<std::string> packed = pack_directory(directory);
    return packed.is_ok() ? std::string() : packed.message();
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return "pipe failed";
  pid_t child = ::fork();
  if (child == 0) {
    ::close(pipe_fds[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    Result<std::string> packed = pack_directory(directory);
    std::string message = packed.is_ok() ? std::string() : packed.message();
    ssize_t written = ::write(pipe_fds[1], message.data(), message.size());
    ::_exit(written == static_cast<ssize_t>(message.size()) ? 0 : 3);
  }
  ::close(pipe_fds[1]);
  std::string message;
  char buffer[512];
  ssize_t got = 0;
  while ((got = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0)
    message.append(buffer, static_cast<size_t>(got));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  return message;
}

TEST(PackTest, RefusesUnreadableFiles) {
  TempDir temp;
  ASSERT_EQ(::chmod(temp.path().c_str(), 0755), 0);
  write_file(temp / "code/app.py", "1");
  write_file(temp / "code/secret.py", "2", 0000);
  std::string message = pack_error_without_privileges(temp / "code");
  EXPECT_TRUE(contains(message, quoted(temp / "code/secret.py").append(": cannot open: Permission denied")));
}

}  // namespace
}  // namespace coil::store
