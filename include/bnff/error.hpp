// bnff: the exception type and argument checks every public operation uses.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace bnff {

// Thrown for a bad argument, always before any output is written. The message
// names the operation, the argument, what was expected and what was given.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

}  // namespace detail

// Throws bnff::error "<where>: argument '<arg>': expected <expected>, got <actual>".
template <class Expected, class Actual>
[[noreturn]] void fail_argument(const char* where, const char* arg, const Expected& expected, const Actual& actual) {
  throw error(detail::concat(where, ": argument '", arg, "': expected ", expected, ", got ", actual));
}

// The checking helper: if !ok, throw naming the argument, expected and actual values.
template <class Expected, class Actual>
inline void check_arg(bool ok, const char* where, const char* arg, const Expected& expected, const Actual& actual) {
  if (!ok) fail_argument(where, arg, expected, actual);
}

// Equality is the most common check; it writes the expected value itself.
template <class T, class U>
inline void check_equal(const char* where, const char* arg, const T& expected, const U& actual) {
  if (!(expected == actual)) fail_argument(where, arg, expected, actual);
}

}  // namespace bnff
