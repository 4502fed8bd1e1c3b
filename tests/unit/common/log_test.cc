#include "common/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace coil::log {
namespace {

// What `write` puts on stderr (fd 2 is a pipe meanwhile).
template <typename Write>
std::string stderr_of(Write write) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  int saved = ::dup(STDERR_FILENO);
  ::dup2(fds[1], STDERR_FILENO);
  write();
  flush();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fds[1]);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) out.append(buffer, static_cast<size_t>(n));
  ::close(fds[0]);
  return out;
}

TEST(Log, AccessLineFormatsMillisecondsWithTwoDecimalsRounded) {
  using std::chrono::nanoseconds;
  EXPECT_EQ(stderr_of([] { access("hello", "GET", "/x?y=1", 200, nanoseconds(1'234'567)); }),
            "coil: access hello GET /x?y=1 200 1.23ms\n");
  EXPECT_EQ(stderr_of([] { access("f", "POST", "/", 504, nanoseconds(2'345'000'000)); }),
            "coil: access f POST / 504 2345.00ms\n");
  EXPECT_EQ(stderr_of([] { access("f", "GET", "/", 200, nanoseconds(5'000)); }), "coil: access f GET / 200 0.01ms\n");
  EXPECT_EQ(stderr_of([] { access("f", "GET", "/", 200, nanoseconds(4'999)); }), "coil: access f GET / 200 0.00ms\n");
  EXPECT_EQ(stderr_of([] { access("f", "GET", "/", 200, nanoseconds(-3)); }), "coil: access f GET / 200 0.00ms\n");
}

TEST(Log, AccessLineShowsEmptyFieldsAsDashes) {
  EXPECT_EQ(stderr_of([] { access("", "", "", 400, std::chrono::nanoseconds(0)); }),
            "coil: access - - - 400 0.00ms\n");
}

TEST(Log, BufferedLinesKeepTheirOrderWithImmediateOnes) {
  EXPECT_EQ(stderr_of([] {
              buffered_line("one");
              access("f", "GET", "/", 200, std::chrono::nanoseconds(0));
              line("three");
            }),
            "one\ncoil: access f GET / 200 0.00ms\nthree\n");
}

}  // namespace
}  // namespace coil::log
