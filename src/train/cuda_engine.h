#pragma once
// The CUDA engine: LlamaGraph<CudaBackend> with bf16 activations, fp32 master weights, gradients
// and AdamW moments on the device. All device memory is planned and allocated when the engine is
// built (an estimate is checked against the free memory first, with a clear error); a training
// step allocates nothing.
#include <memory>

#include "train/engine.h"

namespace quest {

int cuda_device_count();
// On GPU options.local_rank of this node (one rank per GPU in a data-parallel job).
std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& model, const QuantConfig& quant,
                                         const AdamWConfig& adamw, int64_t batch,
                                         const EngineOptions& options = {});
// Bytes of device memory an engine of this shape needs (parameters, optimizer state, activations,
// quantizer buffers), for the out-of-memory message and `quest bench`.
int64_t cuda_engine_bytes(const ModelConfig& model, const QuantConfig& quant, int64_t batch);

}  // namespace quest
