// Unit tests for version ids: SHA-256, the canonical tree digest, hex and
// base32 forms, and the constant-time secret comparison.
#include "store/tree_digest.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "store_test_support.h"

namespace coil::store {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::make_symlink;
using testing::TempDir;
using testing::write_file;

// FIPS 180-2 / RFC 6234 test vector for "abc"; its base32 form computed
// independently with Python's base64.b32encode (lowercased, '=' stripped).
constexpr char kAbcHex[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kAbcBase32[] = "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq";

Digest sha256(std::string_view data) {
  Sha256 hash;
  hash.update(data);
  return hash.finish();
}

Digest digest_of(const std::string& root) {
  Result<Digest> digest = digest_tree(root);
  EXPECT_TRUE(digest.is_ok()) << digest.message();
  return digest.is_ok() ? digest.value() : Digest{};
}

void set_mtime(const std::string& path, time_t seconds) {
  struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

TEST(Sha256Test, KnownVector) { EXPECT_EQ(to_hex(sha256("abc")), kAbcHex); }

TEST(Sha256Test, IncrementalUpdatesEqualOneUpdateAndObjectIsReusable) {
  Sha256 hash;
  hash.update("a");
  hash.update("");
  hash.update("bc");
  EXPECT_EQ(to_hex(hash.finish()), kAbcHex);
  hash.update("abc");
  EXPECT_EQ(to_hex(hash.finish()), kAbcHex);
}

TEST(EncodingTest, Base32KnownVector) {
  std::string text = to_base32(sha256("abc"));
  EXPECT_EQ(text, kAbcBase32);
  EXPECT_EQ(text.size(), 52u);
}

TEST(EncodingTest, HexAndBase32RoundTrip) {
  for (std::string_view input : {"", "abc", "coil", "another input"}) {
    Digest digest = sha256(input);
    Result<Digest> from_hex = parse_hex(to_hex(digest));
    ASSERT_TRUE(from_hex.is_ok()) << from_hex.message();
    EXPECT_EQ(from_hex.value(), digest);
    Result<Digest> from_base32 = parse_base32(to_base32(digest));
    ASSERT_TRUE(from_base32.is_ok()) << from_base32.message();
    EXPECT_EQ(from_base32.value(), digest);
  }
}

TEST(EncodingTest, Base32AcceptsUpperCase) {
  std::string upper = kAbcBase32;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Result<Digest> parsed = parse_base32(upper);
  ASSERT_TRUE(parsed.is_ok()) << parsed.message();
  EXPECT_EQ(to_hex(parsed.value()), kAbcHex);
}

TEST(EncodingTest, HexRejectsOtherForms) {
  std::string text = kAbcHex;
  EXPECT_FALSE(parse_hex(text.substr(0, 63)).is_ok());
  EXPECT_FALSE(parse_hex(text + "0").is_ok());
  EXPECT_FALSE(parse_hex("").is_ok());
  std::string bad = text;
  bad.front() = 'g';
  EXPECT_FALSE(parse_hex(bad).is_ok());
  bad.front() = ' ';
  EXPECT_FALSE(parse_hex(bad).is_ok());
  EXPECT_FALSE(parse_hex(kAbcBase32).is_ok());
  Result<Digest> wrong = parse_hex("xyz");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_TRUE(contains(wrong.message(), "\"xyz\""));
  EXPECT_TRUE(contains(wrong.message(), "64 hexadecimal digits"));
}

TEST(EncodingTest, Base32RejectsOtherForms) {
  std::string text = kAbcBase32;
  EXPECT_FALSE(parse_base32(text.substr(0, 51)).is_ok());
  EXPECT_FALSE(parse_base32(text + "a").is_ok());
  EXPECT_FALSE(parse_base32(text + "====").is_ok());
  EXPECT_FALSE(parse_base32("").is_ok());
  EXPECT_FALSE(parse_base32(kAbcHex).is_ok());
  for (char bad : {'0', '1', '8', '9', '=', '-'}) {
    std::string changed = text;
    changed[10] = bad;
    EXPECT_FALSE(parse_base32(changed).is_ok()) << bad;
  }
  // The last character carries 4 padding bits: only one spelling per digest.
  std::string last_bits = text;
  last_bits.back() = 'r';  // 'q' is 16 (bits 10000); 'r' is 17 sets a padding bit
  EXPECT_FALSE(parse_base32(last_bits).is_ok());
  Result<Digest> wrong = parse_base32("short");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_TRUE(contains(wrong.message(), "\"short\""));
}

TEST(SecretsEqualTest, ComparesContentAndLength) {
  EXPECT_TRUE(secrets_equal("token-123", "token-123"));
  EXPECT_TRUE(secrets_equal("", ""));
  EXPECT_FALSE(secrets_equal("token-123", "token-124"));
  EXPECT_FALSE(secrets_equal("token-123", "token-12"));
  EXPECT_FALSE(secrets_equal("token", ""));
  EXPECT_FALSE(secrets_equal(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}

// The digest is the one the header's canonical form defines, including the
// bytewise order ("a" < "a.b" < "a/x", since '.' < '/').
TEST(DigestTreeTest, MatchesTheCanonicalForm) {
  TempDir temp;
  std::string root = temp / "tree";
  fs::create_directories(root + "/a");
  write_file(root + "/a/x", "hi", 0644);
  write_file(root + "/a.b", "", 0755);
  make_symlink("a/x", root + "/l");
  fs::create_directories(root + "/z");

  using namespace std::string_literals;
  std::string canonical = "d"s + "a" + '\0' +                                //
                          "f"s + "a.b" + '\0' + "755" + '\0' + "0" + '\0' +  //
                          "f"s + "a/x" + '\0' + "644" + '\0' + "2" + '\0' + "hi" + "l"s + "l" + '\0' + "a/x" +
                          '\0' +  //
                          "d"s + "z" + '\0';
  EXPECT_EQ(to_hex(digest_of(root)), to_hex(sha256(canonical)));
}

TEST(DigestTreeTest, EmptyTreeIsTheHashOfNothing) {
  TempDir temp;
  EXPECT_EQ(digest_of(temp.path()), sha256(""));
}

// Two trees with the same content, made in a different order, at different
// times, with different non-executable permission bits.
TEST(DigestTreeTest, IndependentOfCreationOrderTimesAndOwnerlessBits) {
  TempDir temp;
  std::string first = temp / "first";
  std::string second = temp / "second";
  write_file(first + "/app.py", "print(1)\n", 0644);
  write_file(first + "/pkg/mod.py", "x = 1\n", 0644);
  write_file(first + "/run.sh", "#!/bin/sh\n", 0755);
  make_symlink("pkg/mod.py", first + "/alias.py");

  make_symlink("pkg/mod.py", second + "/alias.py");
  write_file(second + "/run.sh", "#!/bin/sh\n", 0700);
  write_file(second + "/pkg/mod.py", "x = 1\n", 0600);
  write_file(second + "/app.py", "print(1)\n", 0664);
  set_mtime(second + "/app.py", 1000);
  set_mtime(second + "/pkg", 2000);
  set_mtime(second + "/alias.py", 3000);

  EXPECT_EQ(digest_of(first), digest_of(second));
}

class DigestChangeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_file(root_ + "/app.py", "print(1)\n", 0644);
    write_file(root_ + "/pkg/mod.py", "x = 1\n", 0644);
    make_symlink("pkg/mod.py", root_ + "/alias.py");
    before_ = digest_of(root_);
  }
  void expect_changed() { EXPECT_NE(digest_of(root_), before_); }

  TempDir temp_;
  std::string root_ = temp_ / "tree";
  Digest before_{};
};

TEST_F(DigestChangeTest, Content) {
  write_file(root_ + "/app.py", "print(2)\n", 0644);
  expect_changed();
}

TEST_F(DigestChangeTest, ExecutableBit) {
  ASSERT_EQ(::chmod((root_ + "/app.py").c_str(), 0744), 0);
  expect_changed();
}

TEST_F(DigestChangeTest, Rename) {
  fs::rename(root_ + "/app.py", root_ + "/main.py");
  expect_changed();
}

TEST_F(DigestChangeTest, SymlinkTarget) {
  fs::remove(root_ + "/alias.py");
  make_symlink("app.py", root_ + "/alias.py");
  expect_changed();
}

TEST_F(DigestChangeTest, SymlinkReplacedByFileWithTheTargetAsContent) {
  fs::remove(root_ + "/alias.py");
  write_file(root_ + "/alias.py", "pkg/mod.py", 0644);
  expect_changed();
}

TEST_F(DigestChangeTest, EmptyDirectoryAdded) {
  fs::create_directory(root_ + "/empty");
  expect_changed();
}

TEST_F(DigestChangeTest, DirectoryRenamed) {
  fs::rename(root_ + "/pkg", root_ + "/lib");
  expect_changed();
}

TEST(DigestTreeTest, FollowsNoSymlinkBelowTheRoot) {
  TempDir temp;
  std::string root = temp / "tree";
  write_file(temp / "outside/secret", "s", 0644);
  make_symlink("../outside", root + "/link");
  Digest with_link = digest_of(root);
  write_file(temp / "outside/secret", "changed", 0644);
  EXPECT_EQ(digest_of(root), with_link);
}

TEST(DigestTreeTest, RefusesSpecialFilesNamingThem) {
  TempDir temp;
  std::string root = temp / "tree";
  fs::create_directories(root + "/sub");
  ASSERT_EQ(::mkfifo((root + "/sub/pipe").c_str(), 0644), 0);
  Result<Digest> digest = digest_tree(root);
  ASSERT_FALSE(digest.is_ok());
  EXPECT_TRUE(contains(digest.message(), "\"sub/pipe\""));
  EXPECT_TRUE(contains(digest.message(), "FIFO"));
}

TEST(DigestTreeTest, MissingRootIsAnError) {
  TempDir temp;
  Result<Digest> digest = digest_tree(temp / "missing");
  ASSERT_FALSE(digest.is_ok());
  EXPECT_TRUE(contains(digest.message(), "missing"));
}

}  // namespace
}  // namespace coil::store
