#include "ops/op_profile.h"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

namespace quest {
namespace {

struct Slot {
  const char* op;
  int64_t a, b;
  int64_t calls;
  double seconds;
};

struct Profile {
  std::mutex mu;
  std::vector<Slot> slots;  // a few dozen at most: a linear search is fine
};

Profile& profile() {
  static Profile p;
  return p;
}

bool by_time(const OpProfileEntry& x, const OpProfileEntry& y) {
  if (x.seconds != y.seconds) return x.seconds > y.seconds;
  return x.label() < y.label();
}

std::atomic<OpProfileClock> g_clock{OpProfileClock::Wall};

}  // namespace

void set_op_profile_enabled(bool on) {
  detail::g_op_profile_enabled.store(on, std::memory_order_relaxed);
}

void set_op_profile_clock(OpProfileClock clock) { g_clock.store(clock, std::memory_order_relaxed); }
OpProfileClock op_profile_clock() { return g_clock.load(std::memory_order_relaxed); }

double op_profile_now() {
  if (op_profile_clock() == OpProfileClock::ProcessCpu) {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void op_profile_record(const char* op, double seconds, int64_t a, int64_t b) {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  for (Slot& s : p.slots) {
    if (s.a == a && s.b == b && (s.op == op || std::strcmp(s.op, op) == 0)) {
      ++s.calls;
      s.seconds += seconds;
      return;
    }
  }
  p.slots.push_back(Slot{op, a, b, 1, seconds});
}

void op_profile_reset() {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  p.slots.clear();
}

std::string OpProfileEntry::label() const {
  if (a == 0 && b == 0) return op;
  return fmt::format("{}[{}x{}]", op, a, b);
}

std::vector<OpProfileEntry> op_profile_entries() {
  std::vector<OpProfileEntry> out;
  {
    Profile& p = profile();
    std::lock_guard<std::mutex> lock(p.mu);
    for (const Slot& s : p.slots) out.push_back(OpProfileEntry{s.op, s.a, s.b, s.calls, s.seconds});
  }
  std::sort(out.begin(), out.end(), by_time);
  return out;
}

std::vector<OpProfileEntry> op_profile_by_op() {
  std::vector<OpProfileEntry> out;
  for (const auto& e : op_profile_entries()) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& o) { return o.op == e.op; });
    if (it == out.end()) {
      out.push_back(OpProfileEntry{e.op, 0, 0, e.calls, e.seconds});
    } else {
      it->calls += e.calls;
      it->seconds += e.seconds;
    }
  }
  std::sort(out.begin(), out.end(), by_time);
  return out;
}

std::string op_profile_table(const std::vector<OpProfileEntry>& entries, double total_seconds,
                             int64_t per) {
  double profiled = 0.0;
  size_t width = 2;
  for (const auto& e : entries) {
    profiled += e.seconds;
    width = std::max(width, e.label().size());
  }
  const double total = total_seconds > 0 ? total_seconds : profiled;
  std::string out = fmt::format("{:<{}} {:>9} {:>12}", "op", width, "calls", "total ms");
  if (per > 0) out += fmt::format(" {:>10}", "ms/step");
  out += fmt::format(" {:>7}\n", "%");
  for (const auto& e : entries) {
    out += fmt::format("{:<{}} {:>9} {:>12.1f}", e.label(), width, e.calls, e.seconds * 1e3);
    if (per > 0) out += fmt::format(" {:>10.2f}", e.seconds * 1e3 / double(per));
    out += fmt::format(" {:>6.1f}%\n", total > 0 ? 100.0 * e.seconds / total : 0.0);
  }
  return out;
}

}  // namespace quest
