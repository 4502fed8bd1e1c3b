#include "common/ascii.h"

#include <gtest/gtest.h>

namespace coil::ascii {
namespace {

TEST(Ascii, FoldsOnlyAsciiLetters) {
  EXPECT_EQ(lowered("Content-Length: 42 ZZ"), "content-length: 42 zz");
  EXPECT_EQ(lower('@'), '@');  // the character before 'A'
  EXPECT_EQ(lower('['), '[');  // the character after 'Z'
  EXPECT_EQ(lower('\xc4'), '\xc4');  // not ASCII: left as it is
}

TEST(Ascii, CaseInsensitiveComparisons) {
  EXPECT_TRUE(iequals("Transfer-Encoding", "transfer-encoding"));
  EXPECT_FALSE(iequals("chunked ", "chunked"));
  EXPECT_FALSE(iequals("chunkee", "chunked"));
  EXPECT_TRUE(icontains("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(icontains("WebSocket", "websocket"));
  EXPECT_FALSE(icontains("upgrad", "upgrade"));
  EXPECT_FALSE(icontains("", "x"));
  EXPECT_TRUE(icontains("x", ""));
}

TEST(Ascii, TokenCharactersAreThoseOfRfc9110) {
  for (char c : std::string_view("!#$%&'*+-.^_`|~09azAZ")) EXPECT_TRUE(is_token_char(c)) << c;
  for (char c : std::string_view(" \t\r\n:;,\"()/<=>?@[\\]{}\x7f\x80\xff")) EXPECT_FALSE(is_token_char(c)) << int(c);
  EXPECT_FALSE(is_token_char('\0'));
}

}  // namespace
}  // namespace coil::ascii
