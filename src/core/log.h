#pragma once
// Console output of the library goes through one sink, which the CLI owns (stderr by default;
// tests silence it). Progress lines overwrite themselves on a terminal and are plain lines in a log.
#include <fmt/format.h>

#include <functional>
#include <string>
#include <string_view>

namespace quest {

enum class LogLevel { Info, Progress, Warning };
using LogSink = std::function<void(LogLevel, std::string_view)>;

void set_log_sink(LogSink sink);
void log_message(LogLevel level, std::string_view text);

template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::Warning, fmt::format(f, std::forward<Args>(args)...));
}
// A transient status line (e.g. "step 10/300 ..."): replaced by the next one on a terminal.
template <class... Args>
void log_progress(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::Progress, fmt::format(f, std::forward<Args>(args)...));
}

// "1h02m", "3m05s", "12s"
std::string format_duration(double seconds);

}  // namespace quest
