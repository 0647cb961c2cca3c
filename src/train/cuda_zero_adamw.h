#pragma once
// AdamW with the optimizer state sharded across GPUs (ZeRO stage 1), the device twin of
// zero_adamw.h: every rank holds the whole model (fp32 master weights, their bf16 copy, fp32
// gradients) and computes gradients on its slice of the batch; step() reduce-scatters the
// gradients over a device communicator (NCCL), so rank r receives the sum over ranks of its block
// [begin, end) of the flat parameters; takes the norm of the whole summed gradient for clipping;
// updates its block with AdamW (the moments exist only for that block); and all-gathers the
// updated weights in place. The learned quantizer parameters (LSQ steps, PACT alphas: a few
// floats) are not sharded: their gradients are all-reduced and every rank updates them alike.
//
// Invariants
// - The engine's flat params and grads buffers hold padded() floats; the padding of grads stays
//   zero (nothing writes it), so padded blocks add zeros.
// - Every call is collective (the same calls in the same order on all ranks). The device
//   communicator's float collectives take device buffers and return when they are complete;
//   before one starts, this class waits for the engine's stream, so the order of the engine's
//   work and the collectives is the host's order.
// - With one rank the result is bit for bit the engine's unsharded AdamW (the same kernels on the
//   same values in the same order): what the one-GPU test checks.
// - Overlap (with an NCCL communicator): during the last backward pass of a step the engine calls
//   grads_ready() for each region of the flat gradients as soon as its last write is enqueued;
//   the region's blocks are then summed into their owners' gradients (in place, ncclReduce to
//   the rank whose block it is) on NCCL's stream while the backward pass goes on. step() waits for
//   them and checks that the regions covered the gradients exactly once; without grads_ready()
//   it reduce-scatters the whole gradients at once.
#ifdef QUEST_HAVE_CUDA
#include <cuda_runtime.h>

#include <span>
#include <vector>

#include "dist/communicator.h"
#include "dist/shard_range.h"
#include "model/cuda_backend.h"
#include "train/adamw.h"

namespace quest {

class NcclCommunicator;

// The clip factor of a gradient norm (checked finite: a clear error when training diverged) and
// the AdamW settings of step t (1-based) at `lr` (weight_decay 0: each group sets its own), as
// train/adamw.cpp computes them; shared by the engine's unsharded step and the sharded one.
float clip_factor(const AdamWConfig& cfg, double norm);
cuda::AdamWStep adamw_settings(const AdamWConfig& cfg, double lr, int64_t t);

class CudaZeroAdamW {
 public:
  // A run of the flat parameters with one weight-decay setting.
  struct Group {
    int64_t offset, size;
    bool decay;
  };
  struct Learned {  // device pointers to one float each
    float* value;
    float* grad;
  };

  // nccl: the same communicator as device_comm when it is NCCL's (enables grads_ready()), or null.
  CudaZeroAdamW(const AdamWConfig& cfg, std::vector<Group> groups, int64_t n_params,
                std::vector<Learned> learned, Communicator& device_comm, cudaStream_t stream,
                NcclCommunicator* nccl = nullptr);
  ~CudaZeroAdamW();

  bool can_overlap() const { return nccl_ != nullptr; }
  // Overlap: the region [offset, offset + count) of grads (the engine's flat gradients) holds this
  // rank's whole contribution to the step once the work enqueued on the stream so far is done.
  void grads_ready(float* grads, int64_t offset, int64_t count);

  const ShardRange& shard() const { return shard_; }
  int64_t padded() const { return shard_.padded(); }
  int64_t step_count() const { return t_; }
  void set_step_count(int64_t t) { t_ = t; }

  // Collective. params [padded()] and its bf16 copy [n_params] leave updated and equal on every
  // rank; grads [padded()] is read. Returns the pre-clipping norm of the summed gradient.
  double step(double lr, float* params, cuda::bf16* params_bf16, const float* grads);

  // Collective: the whole moments, model parameters then the learned ones (the checkpoint's
  // "adam.m" / "adam.v" order), on every rank. scratch: a device buffer of padded() floats whose
  // contents may be overwritten (the engine's gradients between steps).
  std::vector<float> gather_m(float* scratch) { return gather(m_, learned_m_, scratch); }
  std::vector<float> gather_v(float* scratch) { return gather(v_, learned_v_, scratch); }
  // Keeps this rank's block of whole moments laid out as gather_m's (at most n_params + the
  // learned ones; missing values are zero). With with_learned false the learned moments are zero.
  void set_moments(std::span<const float> m, std::span<const float> v, bool with_learned);

 private:
  std::vector<float> gather(const float* shard, const float* learned, float* scratch);
  void upload_moments(float* shard, float* learned, std::span<const float> whole, bool with_learned);

  AdamWConfig cfg_;
  std::vector<Group> groups_;
  int64_t n_params_;
  std::vector<Learned> learned_;
  Communicator& comm_;
  cudaStream_t stream_;
  ShardRange shard_;
  int64_t t_ = 0;
  DeviceBuffer<float> m_, v_, shard_grad_;                 // this rank's block: per_rank floats
  DeviceBuffer<float> learned_m_, learned_v_, learned_g_;  // replicated: one per learned parameter
  DeviceBuffer<float> norm_, norm_scratch_, clip_;
  DeviceBuffer<double> norm_sum_;  // the all-reduced squares
  NcclCommunicator* nccl_ = nullptr;
  std::vector<cudaEvent_t> events_;  // one per region of a step, reused
  int64_t regions_ = 0, reduced_ = 0;  // regions and values enqueued this step
};

}  // namespace quest
#endif  // QUEST_HAVE_CUDA
