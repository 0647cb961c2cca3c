#pragma once
// Test support for the CUDA ops: skipping without a device, RAII device buffers, upload/download
// (bf16 through host-side round-to-nearest-even), random fills and tolerance checks that report
// the worst element. Host code only; usable from .cu and .cpp tests.
//
// Tolerances: a bf16 result is the exact value rounded to 8 significant bits, so it is within
// kBf16Rtol (2^-8, the unit roundoff) of it, relatively. Tests feed the CPU reference the SAME
// bf16-rounded inputs the GPU gets, so the remaining difference is the output rounding plus fp32
// arithmetic noise.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/config.h"
#include "ops/cuda_ops.h"

namespace quest::cuda_test {

using bf16 = __nv_bfloat16;

constexpr double kBf16Rtol = 1.0 / 256.0;  // unit roundoff of bf16 (8 significant bits)

// True when a CUDA device can be used (cached; the first call initializes the runtime).
inline bool has_device() {
  static const bool ok = [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  }();
  return ok;
}

// First statement of every GPU test: skips cleanly on machines without a device.
#define QUEST_REQUIRE_CUDA()                                                       \
  do {                                                                             \
    if (!::quest::cuda_test::has_device()) GTEST_SKIP() << "no CUDA device found"; \
  } while (0)

// Waits for the device and turns an asynchronous kernel failure into a test failure (throws).
inline void sync() { QUEST_CUDA_CHECK(cudaDeviceSynchronize()); }

// ---- bf16 on the host (bit-level, round to nearest even; NaN stays NaN) ----------------------
inline uint16_t bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
inline float round_bf16(float f) { return bf16_float(bf16_bits(f)); }
inline std::vector<float> round_bf16(std::vector<float> v) {
  for (auto& x : v) x = round_bf16(x);
  return v;
}

// ---- device buffers --------------------------------------------------------------------------
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) QUEST_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_), std::swap(n_, o.n_);
    return *this;
  }
  T* get() const { return p_; }
  operator T*() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  // All bytes 0xFF: NaN for float and bf16, -1 for integers; shows what a kernel left unwritten.
  void fill_nan() {
    if (n_) QUEST_CUDA_CHECK(cudaMemset(p_, 0xFF, bytes()));
  }
  void zero() {
    if (n_) QUEST_CUDA_CHECK(cudaMemset(p_, 0, bytes()));
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

template <class T>
DeviceBuffer<T> upload(const std::vector<T>& h) {
  DeviceBuffer<T> d(h.size());
  if (!h.empty()) QUEST_CUDA_CHECK(cudaMemcpy(d.get(), h.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

// Copies `n` elements starting at `p` (synchronizes: waits for the kernels before).
template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  if (n) QUEST_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
template <class T>
std::vector<T> download(const DeviceBuffer<T>& d) {
  return download(d.get(), d.size());
}

// Floats -> bf16 on the device (rounded to nearest even). Upload round_bf16(v) to the CPU
// reference so both sides see the same values.
inline DeviceBuffer<bf16> upload_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = bf16_bits(v[i]);
  DeviceBuffer<bf16> d(v.size());
  if (!v.empty()) QUEST_CUDA_CHECK(cudaMemcpy(d.get(), bits.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}
inline std::vector<float> download_bf16(const bf16* p, size_t n) {
  std::vector<uint16_t> bits(n);
  if (n) QUEST_CUDA_CHECK(cudaMemcpy(bits.data(), p, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_float(bits[i]);
  return v;
}
inline std::vector<float> download_bf16(const DeviceBuffer<bf16>& d) {
  return download_bf16(d.get(), d.size());
}

// ---- random data -----------------------------------------------------------------------------
// Normal(0, scale^2) values; with as_bf16 already rounded to bf16 (what the GPU will see).
inline std::vector<float> randn(Rng& rng, size_t n, double scale = 1.0, bool as_bf16 = false) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(scale * rng.normal());
  return as_bf16 ? round_bf16(std::move(v)) : v;
}
inline std::vector<int32_t> rand_ints(Rng& rng, size_t n, int32_t lo, int32_t hi) {  // [lo, hi)
  std::vector<int32_t> v(n);
  for (auto& x : v) x = lo + int32_t(rng.below(uint64_t(hi - lo)));
  return v;
}
// The model the engine-level tests step: 2 layers of width 256 (two Hadamard blocks), heads of
// 64, a vocabulary of 1000 (padded to 1024), sequences of 64.
inline ModelConfig engine_test_config() {
  ModelConfig m;
  m.n_layer = 2;
  m.d_model = 256;
  m.head_dim = 64;
  m.vocab_size = 1000;
  m.seq_len = 64;
  return m;
}

// Uniformly random odd codes 2q - 1 of a `bits`-bit grid (bits 1..7: -(2^bits - 1) .. 2^bits - 1),
// the int8 product's operands.
inline std::vector<int8_t> rand_odd_codes(Rng& rng, size_t n, int bits) {
  std::vector<int8_t> c(n);
  const int top = (1 << bits) - 1;
  for (auto& v : c) v = int8_t(2 * int(rng.below(uint64_t(1) << bits)) - top);
  return c;
}
// Positive row steps over four decades (as the quantizer's are).
inline std::vector<float> rand_steps(Rng& rng, size_t n) {
  std::vector<float> s(n);
  for (auto& v : s) v = float(1e-3 * std::exp(rng.uniform() * 9.0));
  return s;
}

// ---- comparisons -----------------------------------------------------------------------------
template <class T>
double max_abs(const std::vector<T>& v) {
  double m = 0.0;
  for (const auto& x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

// Every |actual - expected| <= atol + rtol * |expected| (NaN fails). The message names `what`,
// counts the failures, gives the worst element (index, both values) and the largest absolute and
// relative errors seen, which is what one needs to tell a wrong kernel from a loose tolerance.
template <class A, class E>
::testing::AssertionResult all_close(const std::vector<A>& actual, const std::vector<E>& expected,
                                     double atol, double rtol, const std::string& what = "") {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << what << ": size " << actual.size()
                                         << " != expected size " << expected.size();
  size_t bad = 0, worst = 0;
  double worst_excess = -std::numeric_limits<double>::infinity(), max_err = 0.0, max_rel = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = double(actual[i]), e = double(expected[i]);
    const double err = std::fabs(a - e);
    const double excess = err - (atol + rtol * std::fabs(e));
    if (!(err <= max_err)) max_err = err;  // NaN propagates
    if (e != 0.0 && !(err / std::fabs(e) <= max_rel)) max_rel = err / std::fabs(e);
    if (!(excess <= 0.0)) {
      ++bad;
      if (!(excess <= worst_excess)) worst_excess = excess, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << actual.size() << " elements out of tolerance (atol "
         << atol << ", rtol " << rtol << "); worst at index " << worst << ": actual "
         << double(actual[worst]) << " expected " << double(expected[worst])
         << "; max abs err " << max_err << ", max rel err " << max_rel;
}

// Bitwise equality of two float vectors (NaN == NaN when the bits agree).
inline ::testing::AssertionResult bit_equal(const std::vector<float>& actual,
                                            const std::vector<float>& expected,
                                            const std::string& what = "") {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << what << ": size " << actual.size()
                                         << " != expected size " << expected.size();
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < actual.size(); ++i)
    if (std::bit_cast<uint32_t>(actual[i]) != std::bit_cast<uint32_t>(expected[i]))
      if (bad++ == 0) first = i;
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << actual.size()
                                       << " elements differ; first at index " << first
                                       << ": actual " << actual[first] << " expected "
                                       << expected[first];
}

}  // namespace quest::cuda_test
