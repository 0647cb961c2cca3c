#pragma once
// Small fixed-width vector kernels for the CPU ops, written with the GCC/Clang vector extensions:
// portable (baseline x86-64 turns an 8-float vector into two SSE registers; wider targets use
// wider ones), no intrinsics, no runtime dispatch.
//
// Determinism: every kernel uses a fixed lane layout and a fixed order of operations, so a given
// build gives the same bits on every call, for any thread count (threads only ever split
// independent rows). Only IEEE basic operations are used; builds that let the compiler contract
// a * b + c into FMAs (-ffp-contract=fast with an FMA target) may round differently from builds
// that do not, as for any other floating-point code.
#include <cstdint>
#include <cstring>

namespace quest::cpu::simd {

constexpr int W = 8;  // floats per vector
typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t))));
typedef double vd4 __attribute__((vector_size(4 * sizeof(double))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline vf splat(float x) { return vf{} + x; }

namespace detail {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kC1 = 0.693359375f;         // ln 2, high part (exact, 9 bits)
constexpr float kC2 = -2.12194440e-4f;      // ln 2 - kC1
constexpr float kMagic = 12582912.0f;       // 1.5 * 2^23: x + kMagic rounds x to an integer
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
constexpr float kMaxX = 88.37626266479492f;    // 127.5 ln 2; above: +inf (2^n must stay finite)
constexpr float kMinX = -87.33654022216797f;   // below: 0 (2^-126 is the smallest normal)
}  // namespace detail

// e^x in single precision, Cephes' expf scheme: Cody-Waite reduction by ln 2, a degree-7
// polynomial, scaling by 2^n through the exponent bits; about 1 ulp. x > 88.376 gives +inf (the
// true value is finite up to 88.72), x < -87.34 gives 0, NaN stays NaN. The scalar and vector
// versions compute the same bits.
inline float exp_scalar(float x) {
  using namespace detail;
  if (x > kMaxX) return __builtin_inff();
  if (x < kMinX) return 0.0f;
  if (x != x) return x;
  const float n = (x * kLog2e + kMagic) - kMagic;  // round to nearest (even)
  const float r = (x - n * kC1) - n * kC2;
  const float r2 = r * r;
  float p = kP0;
  p = p * r + kP1;
  p = p * r + kP2;
  p = p * r + kP3;
  p = p * r + kP4;
  p = p * r + kP5;
  p = p * r2 + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline vf exp(vf x) {
  using namespace detail;
  const vi over = x > kMaxX, under = x < kMinX;    // lanes: -1 (true) or 0
  const vf xc = x < kMinX ? splat(0.0f) : (x > kMaxX ? splat(0.0f) : x);  // keeps NaN
  const vf n = (xc * kLog2e + kMagic) - kMagic;
  const vf r = (xc - n * kC1) - n * kC2;
  const vf r2 = r * r;
  vf p = splat(kP0);
  p = p * r + kP1;
  p = p * r + kP2;
  p = p * r + kP3;
  p = p * r + kP4;
  p = p * r + kP5;
  p = p * r2 + r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf y = p * (vf)bits;
  y = under ? splat(0.0f) : y;
  y = over ? splat(__builtin_inff()) : y;
  return y;
}

// sum_j a[j] * b[j] in a fixed order: 16 lane sums (two vectors), then the tail, then the lanes.
inline float dot(const float* a, const float* b, int64_t n) {
  vf s0{}, s1{};
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    s0 += load(a + j) * load(b + j);
    s1 += load(a + j + W) * load(b + j + W);
  }
  if (j + W <= n) {
    s0 += load(a + j) * load(b + j);
    j += W;
  }
  vf s = s0 + s1;
  float tail = 0.0f;
  for (; j < n; ++j) tail += a[j] * b[j];
  return (((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))) + tail;
}

// y[j] += alpha * x[j]
inline void axpy(float* y, float alpha, const float* x, int64_t n) {
  const vf va = splat(alpha);
  int64_t j = 0;
  for (; j + W <= n; j += W) store(y + j, load(y + j) + va * load(x + j));
  for (; j < n; ++j) y[j] += alpha * x[j];
}

// x[j] *= alpha
inline void scale(float* x, float alpha, int64_t n) {
  const vf va = splat(alpha);
  int64_t j = 0;
  for (; j + W <= n; j += W) store(x + j, load(x + j) * va);
  for (; j < n; ++j) x[j] *= alpha;
}

// max_j x[j] (n >= 1). NaNs are skipped unless every element is NaN; the result is exact, so
// the lane order does not matter.
inline float max(const float* x, int64_t n) {
  float m = x[0];
  int64_t j = 0;
  if (n >= W) {
    vf vm = load(x);
    for (j = W; j + W <= n; j += W) {
      const vf v = load(x + j);
      vm = v > vm ? v : vm;
    }
    for (int i = 0; i < W; ++i) m = vm[i] > m ? vm[i] : m;
  }
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// out[j] = e^(x[j] - shift) (out may alias x); returns sum_j out[j], accumulated in double in a
// fixed order. out may be null (only the sum).
inline double exp_shift_sum(float* out, const float* x, float shift, int64_t n) {
  vd4 s0{}, s1{};
  const vf vs = splat(shift);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const vf e = exp(load(x + j) - vs);
    if (out) store(out + j, e);
    s0 += __builtin_convertvector(__builtin_shufflevector(e, e, 0, 1, 2, 3), vd4);
    s1 += __builtin_convertvector(__builtin_shufflevector(e, e, 4, 5, 6, 7), vd4);
  }
  double tail = 0.0;
  for (; j < n; ++j) {
    const float e = exp_scalar(x[j] - shift);
    if (out) out[j] = e;
    tail += e;
  }
  const vd4 s = s0 + s1;
  return ((s[0] + s[1]) + (s[2] + s[3])) + tail;
}

}  // namespace quest::cpu::simd
