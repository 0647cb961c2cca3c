#pragma once
// Small fixed-width vector kernels for the CPU ops, written with the GCC/Clang vector extensions:
// 4-float / 2-double vectors, the native width of baseline x86-64 (SSE2) and of NEON, so nothing
// is expanded piecewise; the loops keep two or four vectors in flight for instruction-level
// parallelism. Intrinsics only where the generic form compiles badly (float to double widening on
// x86). The exponential-and-sum kernel (the bulk of softmax and cross-entropy) also has an AVX2
// version, chosen at run time, that returns the same bits.
//
// Determinism: every kernel uses a fixed lane layout and a fixed order of operations, so a given
// build gives the same bits on every call, for any thread count (threads only ever split
// independent rows). Only IEEE basic operations are used; builds that let the compiler contract
// a * b + c into FMAs (-ffp-contract=fast with an FMA target) may round differently from builds
// that do not, as for any other floating-point code.
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// 32-byte vectors passed between always-inlined helpers make GCC note an ABI change on targets
// without AVX; nothing here crosses a call boundary, so the note stays off in the (ops-private)
// files that include this header.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace quest::cpu::simd {

constexpr int W = 4;  // floats per vector
typedef float vf __attribute__((vector_size(16)));
typedef int32_t vi __attribute__((vector_size(16)));
typedef float vf2 __attribute__((vector_size(8)));
typedef double vd __attribute__((vector_size(16)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline vf splat(float x) { return vf{x, x, x, x}; }
inline vd splat_d(double x) { return vd{x, x}; }
// The low / high two floats of v, widened to double (exact). GCC expands the generic form piecewise,
// so x86 gets the one-instruction conversion.
#if defined(__SSE2__)
inline vd lo2(vf v) { return vd(_mm_cvtps_pd(__m128(v))); }
inline vd hi2(vf v) { return vd(_mm_cvtps_pd(_mm_movehl_ps(__m128(v), __m128(v)))); }
#else
inline vd lo2(vf v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1), vd); }
inline vd hi2(vf v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 2, 3), vd); }
#endif
inline float hsum(vf s) { return (s[0] + s[2]) + (s[1] + s[3]); }
inline double hsum(vd s) { return s[0] + s[1]; }

namespace detail {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kC1 = 0.693359375f;         // ln 2, high part (exact, 9 bits)
constexpr float kC2 = -2.12194440e-4f;      // ln 2 - kC1
constexpr float kMagic = 12582912.0f;       // 1.5 * 2^23: (x + kMagic) - kMagic rounds x
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
constexpr float kMaxX = 88.37626266479492f;    // 127.5 ln 2; above: +inf (2^n must stay finite)
constexpr float kMinX = -87.33654022216797f;   // below: 0 (2^-126 is the smallest normal)
}  // namespace detail

// e^x in single precision, Cephes' expf scheme: Cody-Waite reduction by ln 2, a degree-7
// polynomial, scaling by 2^n through the exponent bits; under 1 ulp. x > 88.376 gives +inf (the
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

// The vector e^x for any vector width (VI: the matching int32 vector); always inlined, so that it
// compiles for the target of the function that uses it.
template <class VF, class VI>
__attribute__((always_inline)) inline VF exp_v(VF x) {
  using namespace detail;
  const VI over = x > kMaxX, under = x < kMinX;  // lanes: -1 (true) or 0
  const VF zero = VF{} + 0.0f;
  const VF xc = (over | under) ? zero : x;       // in range (NaN stays NaN)
  const VF n = (xc * kLog2e + kMagic) - kMagic;
  const VF r = (xc - n * kC1) - n * kC2;
  const VF r2 = r * r;
  VF p = VF{} + kP0;
  p = p * r + kP1;
  p = p * r + kP2;
  p = p * r + kP3;
  p = p * r + kP4;
  p = p * r + kP5;
  p = p * r2 + r + 1.0f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  VF scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  VF y = p * scale;
  y = under ? zero : y;
  y = over ? VF{} + __builtin_inff() : y;
  return y;
}

inline vf exp(vf x) { return exp_v<vf, vi>(x); }

// sum_j a[j] * b[j] in a fixed order: 16 lane sums (four vectors), then the lanes, then the tail.
inline float dot(const float* a, const float* b, int64_t n) {
  vf s0{}, s1{}, s2{}, s3{};
  int64_t j = 0;
  for (; j + 4 * W <= n; j += 4 * W) {
    s0 += load(a + j) * load(b + j);
    s1 += load(a + j + W) * load(b + j + W);
    s2 += load(a + j + 2 * W) * load(b + j + 2 * W);
    s3 += load(a + j + 3 * W) * load(b + j + 3 * W);
  }
  for (; j + W <= n; j += W) s0 += load(a + j) * load(b + j);
  float tail = 0.0f;
  for (; j < n; ++j) tail += a[j] * b[j];
  return hsum((s0 + s1) + (s2 + s3)) + tail;
}

// y[j] += alpha * x[j]
inline void axpy(float* y, float alpha, const float* x, int64_t n) {
  const vf va = splat(alpha);
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const vf y0 = load(y + j) + va * load(x + j);
    const vf y1 = load(y + j + W) + va * load(x + j + W);
    store(y + j, y0);
    store(y + j + W, y1);
  }
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
  if (n >= 2 * W) {
    vf m0 = load(x), m1 = load(x + W);
    for (j = 2 * W; j + 2 * W <= n; j += 2 * W) {
      const vf v0 = load(x + j), v1 = load(x + j + W);
      m0 = v0 > m0 ? v0 : m0;
      m1 = v1 > m1 ? v1 : m1;
    }
    m0 = m1 > m0 ? m1 : m0;
    for (int i = 0; i < W; ++i) m = m0[i] > m ? m0[i] : m;
  }
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// sum_j x[j]^2 in double (exact products), fixed order.
inline double sum_squares(const float* x, int64_t n) {
  vd s0{}, s1{};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const vf v = load(x + j);
    const vd a = lo2(v), b = hi2(v);
    s0 += a * a;
    s1 += b * b;
  }
  double tail = 0.0;
  for (; j < n; ++j) tail += double(x[j]) * x[j];
  return hsum(s0 + s1) + tail;
}

// sum_j a[j] * b[j] in double (exact products), fixed order.
inline double dot_double(const float* a, const float* b, int64_t n) {
  vd s0{}, s1{};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const vf x = load(a + j), y = load(b + j);
    s0 += lo2(x) * lo2(y);
    s1 += hi2(x) * hi2(y);
  }
  double tail = 0.0;
  for (; j < n; ++j) tail += double(a[j]) * b[j];
  return hsum(s0 + s1) + tail;
}

// The softmax backward of one row, in place: d[j] = p[j] * (d[j] - D) * scale.
inline void softmax_backward_row(float* d, const float* p, float D, float scale, int64_t n) {
  const vf vD = splat(D), vs = splat(scale);
  int64_t j = 0;
  for (; j + W <= n; j += W) store(d + j, load(p + j) * (load(d + j) - vD) * vs);
  for (; j < n; ++j) d[j] = p[j] * (d[j] - D) * scale;
}

// out[j] = e^(x[j] - shift) (out may alias x, or be null: only the sum); returns sum_j out[j],
// accumulated in double in a fixed order: element j goes to double lane j % 8 (the last n % 8
// elements to a separate tail sum), lanes are combined as ((l0 + l2) + (l4 + l6)) +
// ((l1 + l3) + (l5 + l7)), then the tail is added. Every implementation below keeps exactly this
// order, so they all return the same bits (and store the same exponentials).
inline double exp_shift_sum_portable(float* out, const float* x, float shift, int64_t n) {
  vd s0{}, s1{}, s2{}, s3{};  // lanes (0, 1), (2, 3), (4, 5), (6, 7)
  const vf vs = splat(shift);
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const vf e0 = exp(load(x + j) - vs), e1 = exp(load(x + j + W) - vs);
    if (out) {
      store(out + j, e0);
      store(out + j + W, e1);
    }
    s0 += lo2(e0);
    s1 += hi2(e0);
    s2 += lo2(e1);
    s3 += hi2(e1);
  }
  double tail = 0.0;
  for (; j < n; ++j) {
    const float e = exp_scalar(x[j] - shift);
    if (out) out[j] = e;
    tail += e;
  }
  return hsum((s0 + s1) + (s2 + s3)) + tail;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define QUEST_SIMD_AVX2_PATH 1
// The same with 8-float AVX2 vectors (about twice the throughput), for CPUs that have AVX2. FMA
// stays off (target "avx2" alone), so every operation rounds as in the portable version.
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef double vd4 __attribute__((vector_size(32)));

__attribute__((target("avx2"))) inline double exp_shift_sum_avx2(float* out, const float* x,
                                                                  float shift, int64_t n) {
  vd4 a{}, b{};  // lanes (0, 1, 2, 3), (4, 5, 6, 7)
  const vf8 vs = vf8{} + shift;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    vf8 v;
    std::memcpy(&v, x + j, sizeof(v));
    const vf8 e = exp_v<vf8, vi8>(v - vs);
    if (out) std::memcpy(out + j, &e, sizeof(e));
    a += __builtin_convertvector(__builtin_shufflevector(e, e, 0, 1, 2, 3), vd4);
    b += __builtin_convertvector(__builtin_shufflevector(e, e, 4, 5, 6, 7), vd4);
  }
  double tail = 0.0;
  for (; j < n; ++j) {
    const float e = exp_scalar(x[j] - shift);
    if (out) out[j] = e;
    tail += e;
  }
  return (((a[0] + a[2]) + (b[0] + b[2])) + ((a[1] + a[3]) + (b[1] + b[3]))) + tail;
}

inline bool has_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return bool(__builtin_cpu_supports("avx2"));
  }();
  return yes;
}
#endif

inline double exp_shift_sum(float* out, const float* x, float shift, int64_t n) {
#if defined(QUEST_SIMD_AVX2_PATH)
  if (has_avx2()) return exp_shift_sum_avx2(out, x, shift, n);
#endif
  return exp_shift_sum_portable(out, x, shift, n);
}

}  // namespace quest::cpu::simd
