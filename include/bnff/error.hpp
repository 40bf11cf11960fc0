// bnff: the exception type and argument checks every public operation uses.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

namespace bnff {

// Thrown for a bad argument, always before any output is written. The message
// names the operation, the argument, what was expected and what was given.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

// The parts of a message, formatted only when streamed or converted to a string:
// a check that passes (every check, in a training loop) builds no string.
template <class... Parts>
struct message {
  std::tuple<Parts...> parts;

  template <class Os>
  friend Os& operator<<(Os& os, const message& m) {
    std::apply([&](const auto&... p) { (os << ... << p); }, m.parts);
    return os;
  }
  operator std::string() const {  // NOLINT: implicit, for error(concat(...))
    std::ostringstream os;
    os << *this;
    return os.str();
  }
};

// A part as a message keeps it: string literals as pointers, everything else by value.
template <class P>
using message_part = std::conditional_t<std::is_array_v<P>, const std::remove_extent_t<P>*, P>;

template <class... Parts>
message<message_part<Parts>...> concat(const Parts&... parts) {
  return {std::tuple<message_part<Parts>...>(parts...)};
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
