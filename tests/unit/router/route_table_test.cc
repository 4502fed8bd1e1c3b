// Unit tests for the route table (Spin's routing rules) and decode_path().
#include "router/route_table.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace coil::router {
namespace {

RouteTable table_of(const std::vector<std::string>& routes) {
  RouteTable table;
  for (size_t i = 0; i < routes.size(); ++i) {
    Status s = table.add(routes[i], i);
    EXPECT_TRUE(s.is_ok()) << routes[i] << ": " << s.message();
  }
  return table;
}

// The route (as written) that `path` goes to, or "" when none.
std::string route_for(const RouteTable& table, std::string_view path) {
  auto m = table.match(path);
  return m ? std::string(m->route) : std::string();
}

TEST(RouteTable, EmptyTableMatchesNothing) {
  RouteTable table;
  EXPECT_FALSE(table.match("/").has_value());
  EXPECT_FALSE(table.match("/hello").has_value());
}

TEST(RouteTable, ExactRouteMatchesOnlyItself) {
  RouteTable table = table_of({"/hello"});
  auto m = table.match("/hello");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->target, 0u);
  EXPECT_EQ(m->route, "/hello");
  EXPECT_EQ(m->prefix, "/hello");
  EXPECT_EQ(m->path_info, "");
  EXPECT_FALSE(table.match("/hello/").has_value());
  EXPECT_FALSE(table.match("/hello/x").has_value());
  EXPECT_FALSE(table.match("/hell").has_value());
  EXPECT_FALSE(table.match("/helloo").has_value());
  EXPECT_FALSE(table.match("/Hello").has_value());  // case-sensitive
  EXPECT_FALSE(table.match("/").has_value());
}

TEST(RouteTable, RootExactRoute) {
  RouteTable table = table_of({"/"});
  auto m = table.match("/");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->path_info, "");
  EXPECT_FALSE(table.match("/a").has_value());
}

TEST(RouteTable, PrefixMatchesBarePrefixSlashAndBelow) {
  RouteTable table = table_of({"/a/..."});
  struct Case {
    const char* path;
    const char* path_info;
  };
  for (const Case& c : {Case{"/a", ""}, Case{"/a/", "/"}, Case{"/a/b", "/b"}, Case{"/a/b/c", "/b/c"},
                        Case{"/a//x", "//x"}}) {
    SCOPED_TRACE(c.path);
    auto m = table.match(c.path);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->target, 0u);
    EXPECT_EQ(m->route, "/a/...");
    EXPECT_EQ(m->prefix, "/a");
    EXPECT_EQ(m->path_info, c.path_info);
  }
}

TEST(RouteTable, PrefixDoesNotMatchASiblingWithTheSameStart) {
  RouteTable table = table_of({"/a/..."});
  EXPECT_FALSE(table.match("/ab").has_value());
  EXPECT_FALSE(table.match("/ab/c").has_value());
  EXPECT_FALSE(table.match("/").has_value());
  EXPECT_FALSE(table.match("/b/a").has_value());
  EXPECT_FALSE(table.match("/A").has_value());
}

TEST(RouteTable, MultiSegmentPrefix) {
  RouteTable table = table_of({"/api/v1/..."});
  EXPECT_EQ(route_for(table, "/api/v1"), "/api/v1/...");
  EXPECT_EQ(table.match("/api/v1/users/7")->path_info, "/users/7");
  EXPECT_FALSE(table.match("/api").has_value());
  EXPECT_FALSE(table.match("/api/v10").has_value());
  EXPECT_FALSE(table.match("/api/v").has_value());
}

TEST(RouteTable, ExactBeatsPrefix) {
  // Both insertion orders.
  for (bool exact_first : {true, false}) {
    SCOPED_TRACE(exact_first);
    RouteTable table;
    if (exact_first) {
      ASSERT_TRUE(table.add("/a/b", 7).is_ok());
      ASSERT_TRUE(table.add("/a/...", 8).is_ok());
    } else {
      ASSERT_TRUE(table.add("/a/...", 8).is_ok());
      ASSERT_TRUE(table.add("/a/b", 7).is_ok());
    }
    auto exact = table.match("/a/b");
    ASSERT_TRUE(exact.has_value());
    EXPECT_EQ(exact->target, 7u);
    EXPECT_EQ(exact->path_info, "");
    EXPECT_EQ(table.match("/a/b/c")->target, 8u);
    EXPECT_EQ(table.match("/a/b/c")->path_info, "/b/c");
    EXPECT_EQ(table.match("/a/bc")->target, 8u);
    EXPECT_EQ(table.match("/a")->target, 8u);
  }
}

TEST(RouteTable, ExactRouteEqualToABarePrefixWins) {
  RouteTable table = table_of({"/a/...", "/a"});
  EXPECT_EQ(table.match("/a")->target, 1u);
  EXPECT_EQ(table.match("/a/")->target, 0u);
}

TEST(RouteTable, LongestPrefixWinsWhateverTheOrder) {
  std::vector<std::vector<std::string>> orders = {
      {"/...", "/a/...", "/a/b/..."},
      {"/a/b/...", "/a/...", "/..."},
      {"/a/...", "/...", "/a/b/..."},
  };
  for (const auto& order : orders) {
    SCOPED_TRACE(order[0] + " " + order[1] + " " + order[2]);
    RouteTable table = table_of(order);
    EXPECT_EQ(route_for(table, "/a/b/c"), "/a/b/...");
    EXPECT_EQ(table.match("/a/b/c")->path_info, "/c");
    EXPECT_EQ(route_for(table, "/a/b"), "/a/b/...");
    EXPECT_EQ(table.match("/a/b")->path_info, "");
    EXPECT_EQ(route_for(table, "/a/bc"), "/a/...");
    EXPECT_EQ(table.match("/a/bc")->path_info, "/bc");
    EXPECT_EQ(route_for(table, "/a"), "/a/...");
    EXPECT_EQ(route_for(table, "/ab"), "/...");
    EXPECT_EQ(route_for(table, "/"), "/...");
    // The target is what add() was given for the route.
    auto m = table.match("/a/b/x");
    for (size_t i = 0; i < order.size(); ++i) {
      if (order[i] == "/a/b/...") {
        EXPECT_EQ(m->target, i);
      }
    }
  }
}

TEST(RouteTable, CatchAllMatchesEverything) {
  RouteTable table = table_of({"/..."});
  for (const char* path : {"/", "/a", "/a/b/c", "/x y", "/..."}) {
    SCOPED_TRACE(path);
    auto m = table.match(path);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->route, "/...");
    EXPECT_EQ(m->prefix, "");
    EXPECT_EQ(m->path_info, path);  // the whole path is below ""
  }
}

TEST(RouteTable, CatchAllLosesToAnyOtherRoute) {
  RouteTable table = table_of({"/...", "/hello", "/static/..."});
  EXPECT_EQ(route_for(table, "/hello"), "/hello");
  EXPECT_EQ(route_for(table, "/hello/x"), "/...");
  EXPECT_EQ(table.match("/hello/x")->path_info, "/hello/x");
  EXPECT_EQ(route_for(table, "/static/app.js"), "/static/...");
  EXPECT_EQ(route_for(table, "/staticky"), "/...");
}

TEST(RouteTable, DuplicateRoutesAreRefused) {
  RouteTable table;
  ASSERT_TRUE(table.add("/a", 0).is_ok());
  ASSERT_TRUE(table.add("/b/...", 1).is_ok());
  Status exact = table.add("/a", 2);
  EXPECT_FALSE(exact.is_ok());
  EXPECT_NE(exact.message().find("/a"), std::string::npos);
  EXPECT_FALSE(table.add("/b/...", 3).is_ok());
  // The failed additions changed nothing.
  EXPECT_EQ(table.match("/a")->target, 0u);
  EXPECT_EQ(table.match("/b/x")->target, 1u);
  // An exact route and a prefix route over the same path are different routes.
  EXPECT_TRUE(table.add("/b", 4).is_ok());
  EXPECT_TRUE(table.add("/a/...", 5).is_ok());
}

TEST(RouteTable, MatchViewsStayValidInABigTable) {
  RouteTable table;
  std::vector<std::string> routes;
  for (int i = 0; i < 200; ++i) {
    routes.push_back("/p" + std::to_string(i) + "/...");
    routes.push_back("/e" + std::to_string(i));
  }
  for (size_t i = 0; i < routes.size(); ++i) ASSERT_TRUE(table.add(routes[i], i).is_ok());
  for (int i = 0; i < 200; i += 37) {
    std::string p = "/p" + std::to_string(i) + "/z";
    auto m = table.match(p);
    ASSERT_TRUE(m.has_value()) << p;
    EXPECT_EQ(m->route, "/p" + std::to_string(i) + "/...");
    EXPECT_EQ(m->prefix, "/p" + std::to_string(i));
    EXPECT_EQ(m->target, static_cast<size_t>(2 * i));
    auto e = table.match("/e" + std::to_string(i));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->route, "/e" + std::to_string(i));
    EXPECT_EQ(e->target, static_cast<size_t>(2 * i + 1));
  }
  // "/p1/..." must not take "/p10/x".
  EXPECT_EQ(table.match("/p10/x")->route, "/p10/...");
}

// ---- decode_path -------------------------------------------------------------

std::string decoded(std::string_view target) {
  Result<std::string> r = decode_path(target);
  EXPECT_TRUE(r.is_ok()) << target << ": " << (r.is_ok() ? "" : r.message());
  return r.is_ok() ? *r : std::string("<error>");
}

TEST(RouteTable, CaptureSegmentsMatchOneNonEmptySegment) {
  RouteTable table = table_of({"/users/:id"});
  auto m = table.match("/users/42");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->route, "/users/:id");
  EXPECT_EQ(m->prefix, "/users/42");
  EXPECT_EQ(m->path_info, "");
  ASSERT_EQ(m->captures.size(), 1u);
  EXPECT_EQ(m->captures[0], (std::pair<std::string, std::string>{"id", "42"}));
  for (const char* path : {"/users", "/users/", "/users/42/", "/users/42/x", "/user/42"}) {
    EXPECT_FALSE(table.match(path).has_value()) << path;
  }
}

TEST(RouteTable, CapturesInAPrefixRouteGiveTheConcretePrefix) {
  // As in Spin's own test: "/:path_segment/:path_end/..." on "/path/end/rest".
  RouteTable table = table_of({"/:path_segment/:path_end/..."});
  auto m = table.match("/path/end/rest");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->prefix, "/path/end");
  EXPECT_EQ(m->path_info, "/rest");
  ASSERT_EQ(m->captures.size(), 2u);
  EXPECT_EQ(m->captures[0], (std::pair<std::string, std::string>{"path_segment", "path"}));
  EXPECT_EQ(m->captures[1], (std::pair<std::string, std::string>{"path_end", "end"}));
  auto bare = table.match("/a/b");
  ASSERT_TRUE(bare.has_value());
  EXPECT_EQ(bare->path_info, "");
  auto slash = table.match("/a/b/");
  ASSERT_TRUE(slash.has_value());
  EXPECT_EQ(slash->path_info, "/");
  EXPECT_FALSE(table.match("/a").has_value());
}

TEST(RouteTable, LiteralBeatsCaptureBeatsPrefixSegmentBySegment) {
  RouteTable table = table_of({"/...", "/users/...", "/users/:id", "/users/me", "/users/:id/...", "/:any/posts"});
  EXPECT_EQ(route_for(table, "/users/me"), "/users/me");
  EXPECT_EQ(route_for(table, "/users/42"), "/users/:id");        // a capture beats the rest of a prefix
  EXPECT_EQ(route_for(table, "/users/42/x"), "/users/:id/...");  // ... and so does a longer prefix with one
  EXPECT_EQ(route_for(table, "/users"), "/users/...");
  EXPECT_EQ(route_for(table, "/users/posts"), "/users/:id");      // "users" is literal: decided there
  EXPECT_EQ(route_for(table, "/blog/posts"), "/:any/posts");      // a capture beats "/..."
  EXPECT_EQ(route_for(table, "/blog/other"), "/...");
}

TEST(RouteTable, RoutesDifferingOnlyInCaptureNamesAreDuplicates) {
  RouteTable table;
  ASSERT_TRUE(table.add("/users/:id", 0).is_ok());
  Status s = table.add("/users/:name", 1);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.message(), "duplicate route /users/:name (the same as /users/:id)");
  EXPECT_TRUE(table.add("/users/:id/...", 2).is_ok());  // a prefix route is another route
}

TEST(RouteShape, CapturesLoseTheirNames) {
  EXPECT_EQ(route_shape("/users/:id/..."), "/users/:/...");
  EXPECT_EQ(route_shape("/:a/:b"), "/:/:");
  EXPECT_EQ(route_shape("/a/b:c"), "/a/b:c");  // not a capture
  EXPECT_EQ(route_shape("/"), "/");
  EXPECT_EQ(route_shape("/..."), "/...");
}

TEST(DecodePath, PlainPathsAreUnchanged) {
  EXPECT_EQ(decoded("/"), "/");
  EXPECT_EQ(decoded("/hello"), "/hello");
  EXPECT_EQ(decoded("/a/b/c/"), "/a/b/c/");
  EXPECT_EQ(decoded("/a+b"), "/a+b");  // '+' is not a space in a path
}

TEST(DecodePath, PercentEscapesAreDecoded) {
  EXPECT_EQ(decoded("/a%20b"), "/a b");
  EXPECT_EQ(decoded("/%41%62%63"), "/Abc");
  EXPECT_EQ(decoded("/%2f"), "//");
  EXPECT_EQ(decoded("/a%2Fb"), "/a/b");
  EXPECT_EQ(decoded("/caf%C3%A9"), "/caf\xc3\xa9");
  EXPECT_EQ(decoded("/caf%c3%a9"), "/caf\xc3\xa9");
  EXPECT_EQ(decoded("/%ff"), "/\xff");
  EXPECT_EQ(decoded("/x%3Fy"), "/x?y");  // an encoded '?' is part of the path
}

TEST(DecodePath, DecodingIsDoneOnce) {
  EXPECT_EQ(decoded("/%2541"), "/%41");
  EXPECT_EQ(decoded("/%25"), "/%");
  EXPECT_EQ(decoded("/%252e%252e"), "/%2e%2e");  // not a '..' segment
}

TEST(DecodePath, QueryIsStripped) {
  EXPECT_EQ(decoded("/a?b=c"), "/a");
  EXPECT_EQ(decoded("/?"), "/");
  EXPECT_EQ(decoded("/a%20b?x=%20"), "/a b");
  // Nothing after '?' is looked at: bad escapes and '..' are fine there.
  EXPECT_EQ(decoded("/a?x=%zz"), "/a");
  EXPECT_EQ(decoded("/a?next=/../../etc"), "/a");
  EXPECT_EQ(decoded("/a?%00"), "/a");
}

// Not an escape: the '%' is kept as it is (as uvicorn and Starlette do), and
// what follows it is decoded on its own.
TEST(DecodePath, APercentThatIsNotAnEscapeIsKeptLiterally) {
  EXPECT_EQ(decoded("/items/100%"), "/items/100%");
  EXPECT_EQ(decoded("/%"), "/%");
  EXPECT_EQ(decoded("/%4"), "/%4");
  EXPECT_EQ(decoded("/a%2"), "/a%2");
  EXPECT_EQ(decoded("/%zz"), "/%zz");
  EXPECT_EQ(decoded("/%4g"), "/%4g");
  EXPECT_EQ(decoded("/%g4"), "/%g4");
  EXPECT_EQ(decoded("/%%41"), "/%A");
  EXPECT_EQ(decoded("/% 41"), "/% 41");
  EXPECT_EQ(decoded("/%4?1"), "/%4");
  EXPECT_EQ(decoded("/%-1"), "/%-1");
  EXPECT_EQ(decoded("/50%off/%41"), "/50%off/A");
  // no escape is made of a literal '%' and what is decoded after it
  EXPECT_EQ(decoded("/%%30%30"), "/%00");
  EXPECT_EQ(decoded("/%%32%65"), "/%2e");
  EXPECT_EQ(decoded("/a/%.%2e"), "/a/%..");
}

TEST(DecodePath, ALiteralPercentHidesNoDotDotSegmentNorNul) {
  for (const char* t : {"/a%/%2e%2e", "/a%zz/../b", "/%/.%2e", "/%/%2E./x", "/x/..%"}) {
    Result<std::string> r = decode_path(t);
    if (std::string_view(t) == "/x/..%") {
      ASSERT_TRUE(r.is_ok()) << t;  // "..%" is a segment of its own, not ".."
      EXPECT_EQ(*r, "/x/..%");
      continue;
    }
    ASSERT_FALSE(r.is_ok()) << t << " decoded to " << *r;
    EXPECT_NE(r.message().find(".."), std::string::npos) << r.message();
  }
  for (const char* t : {"/%%00", "/a%%00b", "/%4%00"}) {
    Result<std::string> r = decode_path(t);
    ASSERT_FALSE(r.is_ok()) << t << " decoded to " << *r;
    EXPECT_NE(r.message().find("NUL"), std::string::npos) << r.message();
  }
}

TEST(DecodePath, EncodedNulIsRefused) {
  for (const char* t : {"/%00", "/a%00b", "/a/%00/b"}) {
    Result<std::string> r = decode_path(t);
    EXPECT_FALSE(r.is_ok()) << t;
    if (!r.is_ok()) {
      EXPECT_NE(r.message().find("NUL"), std::string::npos) << r.message();
    }
  }
}

// The contract (route_table.h) says decode_path fails on "a NUL byte"; a raw
// NUL in the target is one too. Beast refuses it in a request line, but
// decode_path is a contract of its own and must not let it through.
TEST(DecodePath, RawNulIsRefused) {
  std::string target("/a\0b", 4);
  Result<std::string> r = decode_path(target);
  EXPECT_FALSE(r.is_ok()) << "decoded to a path of " << (r.is_ok() ? r->size() : 0) << " bytes";
}

TEST(DecodePath, NonOriginFormIsRefused) {
  for (const char* t : {"", "*", "hello", "http://example.com/a", "example.com:443", "?a=b", "%2Fa"}) {
    Result<std::string> r = decode_path(t);
    EXPECT_FALSE(r.is_ok()) << t;
  }
}

class DotDotSegment : public ::testing::TestWithParam<const char*> {};
TEST_P(DotDotSegment, IsRefused) {
  Result<std::string> r = decode_path(GetParam());
  ASSERT_FALSE(r.is_ok()) << GetParam() << " decoded to " << *r;
  EXPECT_NE(r.message().find(".."), std::string::npos) << r.message();
}
INSTANTIATE_TEST_SUITE_P(DecodePath, DotDotSegment,
                         ::testing::Values(
                             // Raw.
                             "/..", "/../", "/../a", "/a/..", "/a/../", "/a/../b", "/a/b/../../c", "/a/..?x=1",
                             // Encoded, fully or partly, in either case.
                             "/%2e%2e", "/%2E%2E", "/a/%2e%2e/b", "/a/.%2e/b", "/a/%2e./b", "/a/%2E%2e",
                             "/%2e%2e/etc/passwd",
                             // A '..' made by an encoded slash.
                             "/a%2f..%2fb", "/a/..%2Fb", "/a%2F..", "/%2F..%2F"));

TEST(DecodePath, DotsThatAreNotADotDotSegmentAreFine) {
  EXPECT_EQ(decoded("/a..b"), "/a..b");
  EXPECT_EQ(decoded("/..a/b"), "/..a/b");
  EXPECT_EQ(decoded("/a/b.."), "/a/b..");
  EXPECT_EQ(decoded("/a/..."), "/a/...");
  EXPECT_EQ(decoded("/a/%2e%2e%2e"), "/a/...");
  EXPECT_EQ(decoded("/.hidden"), "/.hidden");
}

TEST(DecodePath, DecodedPathIsWhatTheTableMatches) {
  RouteTable table = table_of({"/caf\xc3\xa9/...", "/a b"});
  EXPECT_EQ(route_for(table, decoded("/a%20b?q")), "/a b");
  auto m = table.match(decoded("/caf%C3%A9/x%2Fy"));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->path_info, "/x/y");
}

// raw_match() with what the table matched for `target`.
std::optional<RawMatch> raw_of(const RouteTable& table, std::string_view target) {
  auto m = table.match(decoded(target));
  if (!m) return std::nullopt;
  return raw_match(target, m->route, m->prefix, m->path_info);
}

using Captures = std::vector<std::pair<std::string, std::string>>;

TEST(RawMatch, PathInfoIsTheRawRestOfThePath) {
  RouteTable table = table_of({"/static/...", "/...", "/exact"});
  EXPECT_EQ(raw_of(table, "/static/a%20b.txt?x=%41")->path_info, "/a%20b.txt");
  EXPECT_EQ(raw_of(table, "/static/100%25/x")->path_info, "/100%25/x");
  EXPECT_EQ(raw_of(table, "/static")->path_info, "");
  EXPECT_EQ(raw_of(table, "/static/")->path_info, "/");
  EXPECT_EQ(raw_of(table, "/%73tatic/a%20b")->path_info, "/a%20b");  // an escaped prefix counts by segments
  EXPECT_EQ(raw_of(table, "/caf%C3%A9/x")->path_info, "/caf%C3%A9/x");
  EXPECT_EQ(raw_of(table, "/")->path_info, "/");
  EXPECT_EQ(raw_of(table, "/exact")->path_info, "");
}

TEST(RawMatch, CapturesAreTheRawSegments) {
  RouteTable table = table_of({"/users/:id", "/users/:id/posts/:post/..."});
  auto raw = raw_of(table, "/users/a%20b?x");
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(raw->captures, (Captures{{"id", "a%20b"}}));
  EXPECT_EQ(raw->path_info, "");
  raw = raw_of(table, "/users/%E2%82%AC/posts/7/x/y%3F");
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(raw->captures, (Captures{{"id", "%E2%82%AC"}, {"post", "7"}}));
  EXPECT_EQ(raw->path_info, "/x/y%3F");
}

TEST(RawMatch, AnEncodedSlashLeavesTheDecodedValues) {
  // "%2F" makes one raw segment two decoded ones: no raw value maps onto them.
  EXPECT_FALSE(raw_match("/static/a%2Fb", "/static/...", "/static", "/a/b").has_value());
  EXPECT_FALSE(raw_match("/u/x%2fy/z", "/u/:a/:b", "/u/x/y", "").has_value());
  EXPECT_TRUE(raw_match("/static/a%2Eb", "/static/...", "/static", "/a.b").has_value());
}

TEST(RawMatch, ATargetTheMatchWasNotMadeOnLeavesTheDecodedValues) {
  // coil server's invoke: target "/" on the route /fn/NAME/... (prefix /fn/NAME, path info "/").
  EXPECT_FALSE(raw_match("/", "/fn/hello/...", "/fn/hello", "/").has_value());
  EXPECT_FALSE(raw_match("/a/x", "/a/...", "/a", "/y").has_value());
  EXPECT_FALSE(raw_match("/a", "/a/...", "/a", "/").has_value());
  EXPECT_FALSE(raw_match("/u", "/u/:id", "/u/1", "").has_value());
  EXPECT_EQ(raw_match("/a/x%20y", "/a/...", "/a", "/x y")->path_info, "/x%20y");
}

}  // namespace
}  // namespace coil::router
