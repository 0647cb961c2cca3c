#include "train/engine.h"

#include "core/error.h"
#include "train/cpu_engine.h"
#ifdef QUEST_HAVE_CUDA
#include "train/cuda_engine.h"
#endif

namespace quest {

void Engine::set_communicator(Communicator& comm) {
  QUEST_CHECK(comm.size() == 1,
              "data-parallel training is not implemented for this engine yet ({}, world size {}): "
              "train on one process, or on the CPU (--device cpu)",
              device(), comm.size());
}

bool cuda_available() {
#ifdef QUEST_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

std::unique_ptr<Engine> make_engine(const std::string& device, const ModelConfig& model,
                                    const QuantConfig& quant, const AdamWConfig& adamw, int64_t batch) {
  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  if (!cuda) {
    QUEST_CHECK(device == "cpu" || device == "auto", "unknown device '{}' (cpu, cuda or auto)", device);
    return std::make_unique<CpuEngine>(model, quant, adamw, batch);
  }
#ifdef QUEST_HAVE_CUDA
  QUEST_CHECK(cuda_available(), "--device cuda: no CUDA device is present");
  return make_cuda_engine(model, quant, adamw, batch);
#else
  fail("--device cuda: this quest was built without the CUDA backend");
#endif
}

}  // namespace quest
