// The optimizer step on the GPU: the squared global gradient norm (deterministic two-pass), the
// clip factor (on the device: no host round trip), and AdamW exactly as train/adamw.cpp.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

constexpr int kNormThreads = 256;
constexpr int64_t kNormPerBlock = kNormThreads * 64;  // elements per partial, at least
constexpr int64_t kNormMaxBlocks = 1024;

// The partial count is a function of n alone, so the summation order is too.
int64_t norm_blocks(int64_t n) {
  return std::clamp<int64_t>((n + kNormPerBlock - 1) / kNormPerBlock, 1, kNormMaxBlocks);
}

// Pass 1. Grid norm_blocks(n) x 256, grid-stride: thread i owns the float4 groups i, i + stride,
// ... of [0, n4 * 4) (n4 = n / 4 with g 16-byte aligned, else 0) and then the scalar tail. Squares
// are summed in double per thread, then per block (fixed order); block b stores its total as two
// floats hi + lo (scratch need not be 8-byte aligned; hi + lo keeps 48 bits).
__global__ void __launch_bounds__(kNormThreads)
    norm_partial_kernel(float* partial, const float* g, int64_t n, int64_t n4) {
  __shared__ double shared[32];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  double s = 0.0;
  for (int64_t i = tid; i < n4; i += stride) {
    const float4 v = reinterpret_cast<const float4*>(g)[i];
    s += double(v.x) * v.x + double(v.y) * v.y + double(v.z) * v.z + double(v.w) * v.w;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) s += double(g[i]) * g[i];
  s = block_reduce(s, Sum{}, shared);
  if (threadIdx.x == 0) {
    const float hi = float(s);
    partial[2 * blockIdx.x] = hi;
    partial[2 * blockIdx.x + 1] = float(s - double(hi));
  }
}

// Pass 2. One block of 256: thread t sums partials t, t + 256, ... in order, then the block.
__global__ void __launch_bounds__(kNormThreads)
    norm_final_kernel(float* out, const float* partial, int64_t blocks) {
  __shared__ double shared[32];
  double s = 0.0;
  for (int64_t b = threadIdx.x; b < blocks; b += kNormThreads)
    s += double(partial[2 * b]) + double(partial[2 * b + 1]);
  s = block_reduce(s, Sum{}, shared);
  if (threadIdx.x == 0) out[0] = float(s);
}

// One thread. As AdamW::step: clip = min(1, max_norm / (norm + 1e-6)) in double, then float; 1
// without clipping. A norm that is not finite gives NaN, which adamw_update reads as "skip".
__global__ void clip_scale_kernel(float* clip, const float* norm_squared, float max_norm) {
  const double norm = sqrt(double(norm_squared[0]));
  if (!isfinite(norm))
    clip[0] = NAN;
  else
    clip[0] = max_norm > 0.0f ? float(fmin(1.0, double(max_norm) / (norm + 1e-6))) : 1.0f;
}

// Per-call constants, derived on the host in double as AdamW::step does.
struct Coeffs {
  float b1, b2, one_minus_b1, one_minus_b2, eps, step_size, bias2_sqrt, decay;
};

// One parameter, the exact operation sequence of train/adamw.cpp with every operation rounded on
// its own (__f*_rn: no FMA contraction, IEEE sqrt and division), as the CPU computes it.
__device__ __forceinline__ void adamw_one(float& p, float& m, float& v, float g, float clip,
                                          const Coeffs& c) {
  const float grad = __fmul_rn(g, clip);
  m = __fadd_rn(__fmul_rn(c.b1, m), __fmul_rn(c.one_minus_b1, grad));
  v = __fadd_rn(__fmul_rn(c.b2, v), __fmul_rn(__fmul_rn(c.one_minus_b2, grad), grad));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bias2_sqrt), c.eps);
  p = __fsub_rn(__fmul_rn(p, c.decay), __fdiv_rn(__fmul_rn(c.step_size, m), denom));
}

// 256-thread blocks, grid-stride. Thread i owns the float4 groups i, i + stride, ... of
// [0, n4 * 4) (n4 = n / 4 when p, g, m, v are 16-byte aligned and p_bf16 8-byte aligned, else 0)
// and then the scalar tail. A non-finite clip factor leaves everything untouched.
__global__ void adamw_kernel(float* p, bf16* p_bf16, const float* g, float* m, float* v, int64_t n,
                             int64_t n4, Coeffs c, const float* clip_scale) {
  const float clip = *clip_scale;
  if (!isfinite(clip)) return;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n4; i += stride) {
    float4 pv = reinterpret_cast<float4*>(p)[i], mv = reinterpret_cast<float4*>(m)[i];
    float4 vv = reinterpret_cast<float4*>(v)[i];
    const float4 gv = reinterpret_cast<const float4*>(g)[i];
    adamw_one(pv.x, mv.x, vv.x, gv.x, clip, c);
    adamw_one(pv.y, mv.y, vv.y, gv.y, clip, c);
    adamw_one(pv.z, mv.z, vv.z, gv.z, clip, c);
    adamw_one(pv.w, mv.w, vv.w, gv.w, clip, c);
    reinterpret_cast<float4*>(p)[i] = pv;
    reinterpret_cast<float4*>(m)[i] = mv;
    reinterpret_cast<float4*>(v)[i] = vv;
    if (p_bf16) {
      __nv_bfloat162 h[2] = {__floats2bfloat162_rn(pv.x, pv.y), __floats2bfloat162_rn(pv.z, pv.w)};
      reinterpret_cast<uint2*>(p_bf16)[i] = *reinterpret_cast<const uint2*>(h);
    }
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) {
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_one(pi, mi, vi, g[i], clip, c);
    p[i] = pi, m[i] = mi, v[i] = vi;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
  }
}

}  // namespace

int64_t norm_squared_scratch(int64_t n) { return 2 * norm_blocks(n); }

void norm_squared(float* out, const float* g, int64_t n, float* scratch, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::norm_squared: negative size ", n);
  const int64_t blocks = norm_blocks(n);
  const int64_t n4 = aligned16(g) ? n / 4 : 0;
  norm_partial_kernel<<<unsigned(blocks), kNormThreads, 0, stream>>>(scratch, g, n, n4);
  QUEST_CUDA_LAUNCH_CHECK("norm_partial_kernel");
  norm_final_kernel<<<1, kNormThreads, 0, stream>>>(out, scratch, blocks);
  QUEST_CUDA_LAUNCH_CHECK("norm_final_kernel");
}

void clip_scale(float* clip_scale, const float* norm_squared, float max_norm, cudaStream_t stream) {
  clip_scale_kernel<<<1, 1, 0, stream>>>(clip_scale, norm_squared, max_norm);
  QUEST_CUDA_LAUNCH_CHECK("clip_scale_kernel");
}

void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, int64_t n,
                  const AdamWStep& step, const float* clip_scale, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::adamw_update: negative size ", n);
  QUEST_CUDA_REQUIRE(step.bias1 > 0.0f && step.bias2 > 0.0f,
                     "cuda::adamw_update: bias corrections must be positive (1 - beta^t, t >= 1), got ",
                     step.bias1, " and ", step.bias2);
  if (n == 0) return;
  Coeffs c;
  c.b1 = step.beta1, c.b2 = step.beta2;
  c.one_minus_b1 = 1.0f - step.beta1, c.one_minus_b2 = 1.0f - step.beta2;
  c.eps = step.eps;
  c.step_size = float(double(step.lr) / double(step.bias1));
  c.bias2_sqrt = float(std::sqrt(double(step.bias2)));
  c.decay = float(1.0 - double(step.lr) * double(step.weight_decay));
  const bool vec = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v) &&
                   (!p_bf16 || aligned(p_bf16, 8));
  const int64_t n4 = vec ? n / 4 : 0;
  adamw_kernel<<<grid_for(std::max(n4, n - 4 * n4), 256), 256, 0, stream>>>(p, p_bf16, g, m, v, n,
                                                                             n4, c, clip_scale);
  QUEST_CUDA_LAUNCH_CHECK("adamw_kernel");
}

}  // namespace quest::cuda
