// The CUDA engine's memory plan (cuda_engine_bytes): an engine checks it against the free memory
// before it allocates, so it must bound what the engine really takes, or a batch the plan lets
// through fails later in a bare cudaMalloc (seen on the H100 in session 19: 800M W4A4 at 64 x 512,
// planned 77.9 GiB with 78.6 free, then out of memory: the plan left out the integer products'
// codes). After one training step (everything allocated, every kernel loaded), the memory an
// engine holds must be at most its plan. The 30M shape at 32 x 512 tokens makes the quantizers'
// per-entry buffers (codes, mask bits, LSQ's dxq/ds) larger than the plan's fixed slack, so a
// buffer the plan forgets shows.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "model/config.h"
#include "train/cuda_engine.h"
#include "train/engine.h"

namespace quest {
namespace {

size_t free_bytes() {
  size_t free = 0, total = 0;
  QUEST_CUDA_CHECK(cudaDeviceSynchronize());
  QUEST_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return free;
}

TEST(CudaMemoryPlan, BoundsWhatAnEngineTakes) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig m = model_preset("30M");
  constexpr int64_t B = 32;
  const int64_t T = m.seq_len;
  Rng rng(5);
  const auto x = cuda_test::rand_ints(rng, size_t(B * T), 0, int32_t(m.vocab_size));
  const auto y = cuda_test::rand_ints(rng, size_t(B * T), 0, int32_t(m.vocab_size));
  for (const char* q : {"", "w=quest:4,a=quest:4", "w=quest:8,a=quest:8", "w=lsq:4,a=lsq:4",
                        "w=pact:4,a=pact:4"}) {
    SCOPED_TRACE(*q ? q : "bf16");
    const QuantConfig quant = *q ? QuantConfig::parse(q) : QuantConfig::none();
    auto step = [&](Engine& e) {
      e.init_weights(1);
      e.zero_grads();
      e.forward_backward(x.data(), y.data(), B, T, 1.0f / float(B * T));
      e.step(1e-3);
    };
    // A first engine loads this configuration's kernels (once a process, not an engine).
    step(*make_engine("cuda", m, quant, AdamWConfig{}, B));
    const size_t before = free_bytes();
    auto e = make_engine("cuda", m, quant, AdamWConfig{}, B);
    step(*e);
    const int64_t used = int64_t(before) - int64_t(free_bytes());
    const int64_t plan = cuda_engine_bytes(m, quant, B);
    EXPECT_LE(used, plan) << "used " << used / 1048576 << " MiB, planned " << plan / 1048576
                          << " MiB";
    std::printf("[ %s ] used %lld MiB of a plan of %lld MiB\n", *q ? q : "bf16",
                (long long)(used >> 20), (long long)(plan >> 20));
  }
}

}  // namespace
}  // namespace quest
