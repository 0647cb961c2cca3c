#pragma once
// Test support for the CPU ops: naive double-precision references written straight from the
// math (no shared code with src/ops), central finite differences, and tolerance checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace quest::test {

using Vec = std::vector<double>;

inline std::vector<float> randn(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(scale * rng.normal());
  return v;
}

inline Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

inline std::vector<float> nan_filled(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// sum_i c[i] * y[i]: the random linear functional whose gradient a backward pass computes when
// it is given dout = c.
inline double functional(const std::vector<float>& c, const Vec& y) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += double(c[i]) * y[i];
  return s;
}

// Central differences of f at x, one coordinate at a time (f is evaluated in double, so a small
// step gives an essentially exact gradient).
inline Vec numeric_grad(const std::function<double(const Vec&)>& f, Vec x, double eps = 1e-5) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + eps;
    const double fp = f(x);
    x[i] = xi - eps;
    const double fm = f(x);
    x[i] = xi;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

// Every |actual - expected| <= atol + rtol * |expected| (NaN fails); reports the worst element.
template <class T>
::testing::AssertionResult all_close(const std::vector<T>& actual, const Vec& expected, double atol,
                                     double rtol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected size " << expected.size();
  size_t bad = 0, worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(double(actual[i]) - expected[i]);
    const double excess = err - (atol + rtol * std::fabs(expected[i]));
    if (!(excess <= 0.0)) {
      ++bad;
      if (!(excess <= worst_excess)) worst_excess = excess, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.size() << " elements out of tolerance; worst at " << worst
         << ": actual " << actual[worst] << " expected " << expected[worst];
}

// The difference after - before of an accumulated gradient buffer, in double.
inline Vec delta(const std::vector<float>& after, const std::vector<float>& before) {
  Vec d(after.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = double(after[i]) - double(before[i]);
  return d;
}

// Runs f with the given OpenMP thread count, then restores the previous count.
template <class F>
void with_threads(int n, F&& f) {
  const int old = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(old);
}

}  // namespace quest::test

// ---- double-precision references, straight from the definitions -------------------------------
namespace quest::ref {

using test::Vec;

// out[N,M] = x[N,K] w[M,K]^T
inline Vec matmul(const Vec& x, const Vec& w, int64_t N, int64_t K, int64_t M) {
  Vec out(size_t(N * M), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) out[n * M + m] += x[n * K + k] * w[m * K + k];
  return out;
}

inline Vec embedding(const std::vector<int32_t>& tokens, const Vec& table, int64_t d) {
  Vec out;
  for (int32_t t : tokens)
    out.insert(out.end(), table.begin() + t * d, table.begin() + (t + 1) * d);
  return out;
}

// out = x / sqrt(mean(x^2) + eps) * w, per row; rstd (optional) receives 1 / sqrt(...).
inline Vec rmsnorm(const Vec& x, const Vec& w, int64_t N, int64_t d, double eps,
                   Vec* rstd = nullptr) {
  Vec out(x.size());
  if (rstd) rstd->assign(size_t(N), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0.0;
    for (int64_t j = 0; j < d; ++j) ms += x[n * d + j] * x[n * d + j];
    const double r = 1.0 / std::sqrt(ms / double(d) + eps);
    if (rstd) (*rstd)[n] = r;
    for (int64_t j = 0; j < d; ++j) out[n * d + j] = x[n * d + j] * r * w[j];
  }
  return out;
}

// Rotates each adjacent pair (2i, 2i+1) of every q and k head of token t by
// (pos0 + t) * theta^(-2i / head_dim); v is copied unchanged.
inline Vec rope(Vec qkv, int64_t B, int64_t T, int64_t H, int64_t hd, double theta, int64_t pos0) {
  const int64_t C = H * hd;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t part = 0; part < 2; ++part)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < hd / 2; ++i) {
            const double angle = double(pos0 + t) * std::pow(theta, -2.0 * double(i) / double(hd));
            double* p = &qkv[(b * T + t) * 3 * C + part * C + h * hd + 2 * i];
            const double x0 = p[0], x1 = p[1];
            p[0] = x0 * std::cos(angle) - x1 * std::sin(angle);
            p[1] = x0 * std::sin(angle) + x1 * std::cos(angle);
          }
  return qkv;
}

// Causal attention on qkv[B,T,3C]; returns out[B,T,C]; probs (optional) [B,H,T,T], 0 above the
// diagonal.
inline Vec attention(const Vec& qkv, int64_t B, int64_t T, int64_t H, int64_t hd,
                     Vec* probs = nullptr) {
  const int64_t C = H * hd;
  Vec out(size_t(B * T * C), 0.0);
  if (probs) probs->assign(size_t(B * H * T * T), 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t j) {
    return qkv[(b * T + t) * 3 * C + part * C + h * hd + j];
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        Vec sc(size_t(t + 1));
        double mx = -INFINITY;
        for (int64_t s = 0; s <= t; ++s) {
          double dotp = 0.0;
          for (int64_t j = 0; j < hd; ++j) dotp += at(b, t, 0, h, j) * at(b, s, 1, h, j);
          sc[s] = dotp / std::sqrt(double(hd));
          mx = std::max(mx, sc[s]);
        }
        double z = 0.0;
        for (auto& v : sc) z += (v = std::exp(v - mx));
        for (int64_t s = 0; s <= t; ++s) {
          const double p = sc[s] / z;
          if (probs) (*probs)[((b * H + h) * T + t) * T + s] = p;
          for (int64_t j = 0; j < hd; ++j)
            out[(b * T + t) * C + h * hd + j] += p * at(b, s, 2, h, j);
        }
      }
  return out;
}

// The gradient of sum(c * attention(qkv)) with respect to qkv, analytically from the definition:
// dp = c_t . v_s, ds = p (dp - sum_s p dp) / sqrt(hd), dq_t = sum_s ds k_s, dk_s = sum_t ds q_t,
// dv_s = sum_t p c_t. For shapes too long for finite differences.
inline Vec attention_backward(const Vec& qkv, const Vec& c, int64_t B, int64_t T, int64_t H,
                              int64_t hd) {
  const int64_t C = H * hd;
  Vec probs;
  attention(qkv, B, T, H, hd, &probs);
  Vec d(qkv.size(), 0.0);
  auto idx = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t j) {
    return size_t((b * T + t) * 3 * C + part * C + h * hd + j);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const double* p = &probs[size_t(((b * H + h) * T + t) * T)];
        Vec dp(size_t(t + 1));
        double D = 0.0;
        for (int64_t s = 0; s <= t; ++s) {
          double x = 0.0;
          for (int64_t j = 0; j < hd; ++j)
            x += c[size_t((b * T + t) * C + h * hd + j)] * qkv[idx(b, s, 2, h, j)];
          dp[size_t(s)] = x;
          D += p[s] * x;
        }
        for (int64_t s = 0; s <= t; ++s) {
          const double ds = p[s] * (dp[size_t(s)] - D) / std::sqrt(double(hd));
          for (int64_t j = 0; j < hd; ++j) {
            d[idx(b, t, 0, h, j)] += ds * qkv[idx(b, s, 1, h, j)];
            d[idx(b, s, 1, h, j)] += ds * qkv[idx(b, t, 0, h, j)];
            d[idx(b, s, 2, h, j)] += p[s] * c[size_t((b * T + t) * C + h * hd + j)];
          }
        }
      }
  return d;
}

inline Vec swiglu(const Vec& a, const Vec& b) {
  Vec out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] / (1.0 + std::exp(-a[i])) * b[i];
  return out;
}

// Sum over rows of -log softmax(logits[n, :V])[target[n]]; row_losses (optional) per row.
inline double cross_entropy(const Vec& logits, const std::vector<int32_t>& targets, int64_t N,
                            int64_t V, int64_t Vp, Vec* row_losses = nullptr) {
  double total = 0.0;
  if (row_losses) row_losses->assign(size_t(N), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    const double* l = &logits[n * Vp];
    const double mx = *std::max_element(l, l + V);
    double z = 0.0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(l[j] - mx);
    const double loss = mx + std::log(z) - l[targets[n]];
    if (row_losses) (*row_losses)[n] = loss;
    total += loss;
  }
  return total;
}

}  // namespace quest::ref
