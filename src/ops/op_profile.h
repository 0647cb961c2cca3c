#pragma once
// A per-op time profile: wall seconds and call counts accumulated per op name (and optional shape
// tag), for benchmarks and `--profile`-style reports. Backend-neutral: the CPU ops time themselves
// with a scope at entry (QUEST_OP_PROFILE); another backend can do the same after synchronizing,
// or hand in device-measured times through op_profile_record().
//
// Cost: disabled (the default), a scope is one relaxed atomic load and a not-taken branch at entry
// and exit. Enabled, each scope reads the clock twice and takes a mutex once (well under a
// microsecond), which is noise against ops that run for tens of microseconds or more. Recording is thread-safe; scopes
// are meant for calls made from the host thread that drives the model (nested scopes each count
// their own full time, so only time disjoint work if the table is to add up).
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace quest {

namespace detail {
inline std::atomic<bool> g_op_profile_enabled{false};
}

inline bool op_profile_enabled() {
  return detail::g_op_profile_enabled.load(std::memory_order_relaxed);
}
void set_op_profile_enabled(bool on);

// What a scope measures: wall time (the default), or the CPU time of the whole process (all its
// threads, spin-waiting included). On a machine shared with other work, CPU time with one thread
// is the figure that does not depend on the other work.
enum class OpProfileClock { Wall, ProcessCpu };
void set_op_profile_clock(OpProfileClock clock);
OpProfileClock op_profile_clock();
// Seconds on the selected clock (from an arbitrary origin).
double op_profile_now();

// Adds one call of `seconds` to the entry (op, a, b). `op` must outlive the profile (a string
// literal); a and b are an optional shape tag (0 = none), kept apart in the table, e.g. the (K, M)
// of a matrix product, so that the products of different layers show up separately.
void op_profile_record(const char* op, double seconds, int64_t a = 0, int64_t b = 0);
void op_profile_reset();

struct OpProfileEntry {
  std::string op;  // the op name
  int64_t a = 0, b = 0;  // shape tag (0 = none)
  int64_t calls = 0;
  double seconds = 0.0;
  std::string label() const;  // "op" or "op[a x b]"
};
// Every entry, largest total time first.
std::vector<OpProfileEntry> op_profile_entries();
// Entries summed over shape tags (one per op name), largest total time first.
std::vector<OpProfileEntry> op_profile_by_op();

// A text table: label, calls, total ms, ms per `per` (e.g. per step; 0 = no such column) and % of
// `total_seconds` (0 = % of the profiled time).
std::string op_profile_table(const std::vector<OpProfileEntry>& entries, double total_seconds = 0.0,
                             int64_t per = 0);

// Times the enclosing scope into the profile when profiling is enabled at entry.
class OpProfileScope {
 public:
  explicit OpProfileScope(const char* op, int64_t a = 0, int64_t b = 0) {
    if (op_profile_enabled()) {
      op_ = op, a_ = a, b_ = b;
      start_ = op_profile_now();
    }
  }
  ~OpProfileScope() {
    if (op_) op_profile_record(op_, op_profile_now() - start_, a_, b_);
  }
  OpProfileScope(const OpProfileScope&) = delete;
  OpProfileScope& operator=(const OpProfileScope&) = delete;

 private:
  const char* op_ = nullptr;
  int64_t a_ = 0, b_ = 0;
  double start_ = 0.0;
};

}  // namespace quest

#define QUEST_OP_PROFILE_CAT2(a, b) a##b
#define QUEST_OP_PROFILE_CAT(a, b) QUEST_OP_PROFILE_CAT2(a, b)
// QUEST_OP_PROFILE("name") or QUEST_OP_PROFILE("name", a, b): time the rest of the scope.
#define QUEST_OP_PROFILE(...) \
  ::quest::OpProfileScope QUEST_OP_PROFILE_CAT(quest_op_profile_, __LINE__)(__VA_ARGS__)
