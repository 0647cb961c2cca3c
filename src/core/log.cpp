#include "core/log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <mutex>

namespace quest {

namespace {
std::mutex g_mutex;
bool g_progress_open = false;  // a progress line is on screen without its newline

void default_sink(LogLevel level, std::string_view text) {
  static const bool tty = ::isatty(STDERR_FILENO);
  if (level == LogLevel::Progress && tty) {
    std::fprintf(stderr, "\r\033[2K%.*s", int(text.size()), text.data());
    g_progress_open = true;
  } else {
    if (g_progress_open) std::fputc('\n', stderr);
    g_progress_open = false;
    std::fprintf(stderr, "%s%.*s\n", level == LogLevel::Warning ? "warning: " : "", int(text.size()),
                 text.data());
  }
  std::fflush(stderr);
}

LogSink& sink() {
  static LogSink s = default_sink;
  return s;
}
}  // namespace

void set_log_sink(LogSink s) {
  std::lock_guard lock(g_mutex);
  sink() = s ? std::move(s) : LogSink(default_sink);
}

void log_message(LogLevel level, std::string_view text) {
  std::lock_guard lock(g_mutex);
  sink()(level, text);
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

}  // namespace quest
