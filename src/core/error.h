#pragma once
// Errors: the library reports bad input by throwing quest::Error with a message that names the
// problem; only the CLI turns it into a message and a non-zero exit.
#include <fmt/format.h>

#include <stdexcept>
#include <utility>

namespace quest {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace quest

// QUEST_CHECK(condition, "format {}", args...): throw quest::Error when the condition is false.
#define QUEST_CHECK(cond, ...)        \
  do {                                \
    if (!(cond)) ::quest::fail(__VA_ARGS__); \
  } while (0)
