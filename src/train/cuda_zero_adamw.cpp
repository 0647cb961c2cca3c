// Host code of the device ZeRO-1 AdamW (compiled only with the CUDA backend).
#ifdef QUEST_HAVE_CUDA
#include "train/cuda_zero_adamw.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#ifdef QUEST_HAVE_NCCL
#include "dist/nccl/nccl_communicator.h"
#endif

namespace quest {

float clip_factor(const AdamWConfig& cfg, double norm) {
  QUEST_CHECK(std::isfinite(norm), "the gradient norm is not finite ({}): training diverged", norm);
  return cfg.grad_clip > 0 ? float(std::min(1.0, cfg.grad_clip / (norm + 1e-6))) : 1.0f;
}

cuda::AdamWStep adamw_settings(const AdamWConfig& cfg, double lr, int64_t t) {
  cuda::AdamWStep s{};
  s.lr = float(lr);
  s.beta1 = float(cfg.beta1);
  s.beta2 = float(cfg.beta2);
  s.eps = float(cfg.eps);
  s.bias1 = float(1.0 - std::pow(cfg.beta1, double(t)));
  s.bias2 = float(1.0 - std::pow(cfg.beta2, double(t)));
  return s;
}

CudaZeroAdamW::CudaZeroAdamW(const AdamWConfig& cfg, std::vector<Group> groups, int64_t n_params,
                             std::vector<Learned> learned, Communicator& device_comm, cudaStream_t stream,
                             NcclCommunicator* nccl)
    : cfg_(cfg),
      groups_(std::move(groups)),
      n_params_(n_params),
      learned_(std::move(learned)),
      comm_(device_comm),
      stream_(stream),
      shard_(shard_range(n_params, device_comm.rank(), device_comm.size())) {
  m_ = DeviceBuffer<float>(shard_.per_rank);
  v_ = DeviceBuffer<float>(shard_.per_rank);
  shard_grad_ = DeviceBuffer<float>(shard_.per_rank);
  const int64_t n_learned = int64_t(learned_.size());
  learned_m_ = DeviceBuffer<float>(n_learned);
  learned_v_ = DeviceBuffer<float>(n_learned);
  learned_g_ = DeviceBuffer<float>(n_learned);
  norm_ = DeviceBuffer<float>(1);
  norm_scratch_ = DeviceBuffer<float>(cuda::norm_squared_scratch(std::max<int64_t>(shard_.size(), 1)));
  clip_ = DeviceBuffer<float>(1);
  norm_sum_ = DeviceBuffer<double>(1);
#ifdef QUEST_HAVE_NCCL
  nccl_ = nccl;
#else
  QUEST_CHECK(nccl == nullptr, "an NCCL communicator in a build without NCCL");
#endif
}

CudaZeroAdamW::~CudaZeroAdamW() {
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

void CudaZeroAdamW::grads_ready(float* grads, int64_t offset, int64_t count) {
#ifdef QUEST_HAVE_NCCL
  QUEST_CHECK(nccl_ != nullptr, "gradient overlap needs the NCCL communicator");
  QUEST_CHECK(offset >= 0 && count > 0 && offset + count <= n_params_, "gradient region [{}, {}) outside [0, {})",
              offset, offset + count, n_params_);
  if (size_t(regions_) == events_.size()) {
    cudaEvent_t e = nullptr;
    QUEST_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    events_.push_back(e);
  }
  cudaEvent_t ready = events_[size_t(regions_++)];
  QUEST_CUDA_CHECK(cudaEventRecord(ready, stream_));
  // The blocks of the ranks that own part of the region, each summed into its owner.
  std::vector<NcclCommunicator::Reduce> parts;
  for (int r = 0; r < shard_.world; ++r) {
    const int64_t lo = std::max(offset, int64_t(r) * shard_.per_rank);
    const int64_t hi = std::min({offset + count, int64_t(r + 1) * shard_.per_rank, n_params_});
    if (lo < hi) parts.push_back({grads + lo, hi - lo, r});
  }
  nccl_->reduce_async(parts, ready);
  reduced_ += count;
#else
  (void)grads, (void)offset, (void)count;
  fail("gradient overlap needs NCCL");
#endif
}

double CudaZeroAdamW::step(double lr, float* params, cuda::bf16* params_bf16, const float* grads) {
  const int64_t n_learned = int64_t(learned_.size());
  // The gradients of the whole batch: this rank's block summed over ranks; the learned
  // parameters' gradients summed whole.
  QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (regions_ > 0) {
#ifdef QUEST_HAVE_NCCL
    // Overlapped: every region was summed into its owners during the backward pass.
    QUEST_CHECK(reduced_ == n_params_, "the gradient regions of the step covered {} of {} values", reduced_,
                n_params_);
    nccl_->finish("gradient reduction");
    if (shard_.size() > 0)
      QUEST_CUDA_CHECK(cudaMemcpyAsync(shard_grad_.get(), grads + shard_.begin, sizeof(float) * size_t(shard_.size()),
                                       cudaMemcpyDeviceToDevice, stream_));
#endif
    regions_ = reduced_ = 0;
  } else {
    comm_.reduce_scatter_sum(grads, shard_grad_, shard_.per_rank);
  }
  for (int64_t i = 0; i < n_learned; ++i)
    QUEST_CUDA_CHECK(cudaMemcpyAsync(learned_g_.get() + i, learned_[size_t(i)].grad, sizeof(float),
                                     cudaMemcpyDeviceToDevice, stream_));
  QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (n_learned > 0) comm_.all_reduce_sum(learned_g_.get(), n_learned);

  // The norm of the whole summed gradient: squares per block (as the engine sums them, in
  // double once on the host), then over ranks, then the learned parameters' (the same on all).
  float block_squares = 0.0f;
  if (shard_.size() > 0) {
    cuda::norm_squared(norm_, shard_grad_, shard_.size(), norm_scratch_, stream_);
    QUEST_CUDA_CHECK(cudaMemcpyAsync(&block_squares, norm_.get(), sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  std::vector<float> lg(static_cast<size_t>(n_learned));
  if (n_learned > 0)
    QUEST_CUDA_CHECK(cudaMemcpyAsync(lg.data(), learned_g_.get(), sizeof(float) * size_t(n_learned),
                                     cudaMemcpyDeviceToHost, stream_));
  QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  double squares = block_squares;
  QUEST_CUDA_CHECK(cudaMemcpy(norm_sum_.get(), &squares, sizeof(double), cudaMemcpyHostToDevice));
  comm_.all_reduce_sum(norm_sum_.get(), 1);
  QUEST_CUDA_CHECK(cudaMemcpy(&squares, norm_sum_.get(), sizeof(double), cudaMemcpyDeviceToHost));
  for (float g : lg) squares += double(g) * g;
  const double norm = std::sqrt(squares);
  const float clip = clip_factor(cfg_, norm);
  QUEST_CUDA_CHECK(cudaMemcpyAsync(clip_.get(), &clip, sizeof(float), cudaMemcpyHostToDevice, stream_));
  cuda::AdamWStep s = adamw_settings(cfg_, lr, ++t_);
  // This rank's block of each group, in place in the whole parameters.
  int64_t offset = 0;
  for (const auto& g : groups_) {
    const int64_t lo = std::max(g.offset, shard_.begin), hi = std::min(g.offset + g.size, shard_.end);
    if (lo < hi) {
      s.weight_decay = g.decay ? float(cfg_.weight_decay) : 0.0f;
      const int64_t k = lo - shard_.begin;
      cuda::adamw_update(params + lo, nullptr, shard_grad_.get() + k, m_.get() + k, v_.get() + k, hi - lo, s,
                         clip_, stream_);
    }
    offset += g.size;
  }
  QUEST_CHECK(offset == n_params_, "the parameter groups cover {} of {} values", offset, n_params_);
  s.weight_decay = float(cfg_.weight_decay);  // the reference decays LSQ/PACT parameters too
  for (int64_t i = 0; i < n_learned; ++i)
    cuda::adamw_update(learned_[size_t(i)].value, nullptr, learned_g_.get() + i, learned_m_.get() + i,
                       learned_v_.get() + i, 1, s, clip_, stream_);

  // Every rank's block into every rank's parameters (in place: block r sits at r * per_rank).
  QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm_.all_gather(params + int64_t(comm_.rank()) * shard_.per_rank, params, shard_.per_rank);
  cuda::to_bf16(params_bf16, params, n_params_, stream_);
  return norm;
}

std::vector<float> CudaZeroAdamW::gather(const float* shard, const float* learned, float* scratch) {
  QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm_.all_gather(shard, scratch, shard_.per_rank);
  const int64_t n_learned = int64_t(learned_.size());
  std::vector<float> out(size_t(n_params_ + n_learned));
  QUEST_CUDA_CHECK(cudaMemcpy(out.data(), scratch, sizeof(float) * size_t(n_params_), cudaMemcpyDeviceToHost));
  if (n_learned > 0)
    QUEST_CUDA_CHECK(cudaMemcpy(out.data() + n_params_, learned, sizeof(float) * size_t(n_learned),
                                cudaMemcpyDeviceToHost));
  return out;
}

void CudaZeroAdamW::upload_moments(float* shard, float* learned, std::span<const float> whole,
                                   bool with_learned) {
  const int64_t n_learned = int64_t(learned_.size());
  QUEST_CHECK(int64_t(whole.size()) <= n_params_ + n_learned, "optimizer moments of {} values for a state of {}",
              whole.size(), n_params_ + n_learned);
  std::vector<float> block(size_t(shard_.per_rank), 0.0f);
  for (int64_t i = 0; i < shard_.size(); ++i) {
    const int64_t g = shard_.begin + i;
    if (g < int64_t(whole.size())) block[size_t(i)] = whole[size_t(g)];
  }
  QUEST_CUDA_CHECK(cudaMemcpy(shard, block.data(), sizeof(float) * block.size(), cudaMemcpyHostToDevice));
  std::vector<float> l(size_t(n_learned), 0.0f);
  for (int64_t i = 0; with_learned && i < n_learned; ++i)
    if (n_params_ + i < int64_t(whole.size())) l[size_t(i)] = whole[size_t(n_params_ + i)];
  if (n_learned > 0)
    QUEST_CUDA_CHECK(cudaMemcpy(learned, l.data(), sizeof(float) * l.size(), cudaMemcpyHostToDevice));
}

void CudaZeroAdamW::set_moments(std::span<const float> m, std::span<const float> v, bool with_learned) {
  QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  upload_moments(m_, learned_m_, m, with_learned);
  upload_moments(v_, learned_v_, v, with_learned);
}

}  // namespace quest
#endif  // QUEST_HAVE_CUDA
