// ASCII character classes and case folding for protocol text: HTTP header
// names and tokens, host names, identifiers.
//
// Not the C library's tolower/isalnum: those follow the process locale (HTTP
// is case-insensitive in ASCII only, RFC 9110 section 5.1) and are calls
// through a table per character, on the path of every request.
#pragma once

#include <string>
#include <string_view>

namespace coil::ascii {

constexpr bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
constexpr bool is_alpha(char c) { return is_upper(c) || (c >= 'a' && c <= 'z'); }
constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
constexpr char lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

// A "tchar" of RFC 9110 section 5.6.2: what a header name or a token is made of.
constexpr bool is_token_char(char c) {
  if (is_alnum(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

inline void lower_in_place(std::string& s) {
  for (char& c : s) c = lower(c);
}

inline std::string lowered(std::string_view s) {
  std::string out(s);
  lower_in_place(out);
  return out;
}

// Equal when case is ignored.
constexpr bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Whether `text` contains `word` when case is ignored.
constexpr bool icontains(std::string_view text, std::string_view word) {
  if (word.size() > text.size()) return false;
  for (size_t i = 0; i + word.size() <= text.size(); ++i) {
    if (iequals(text.substr(i, word.size()), word)) return true;
  }
  return false;
}

}  // namespace coil::ascii
