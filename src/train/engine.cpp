#include "train/engine.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/llama.h"
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

void check_loadable(Model& model, const ModelConfig& config, const QuantConfig& quant) {
  QUEST_CHECK(nlohmann::json(model.config()) == nlohmann::json(config),
              "load_model: the model's configuration {} differs from the engine's {}",
              nlohmann::json(model.config()).dump(), nlohmann::json(config).dump());
  for (const auto& [name, op] : model.named_linears())
    QUEST_CHECK(op->quant_config().same_quantization(quant),
                "load_model: layer {} is quantized as '{}', the engine as '{}'", name,
                op->quant_config().to_string(), quant.to_string());
}

bool cuda_available() {
#ifdef QUEST_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

std::string resolve_device(const std::string& device) {
  QUEST_CHECK(device == "cpu" || device == "cuda" || device == "auto", "unknown device '{}' (cpu, cuda or auto)",
              device);
  if (device == "cpu" || (device == "auto" && !cuda_available())) return "cpu";
#ifdef QUEST_HAVE_CUDA
  QUEST_CHECK(cuda_available(), "--device cuda: no CUDA device is present");
  return "cuda";
#else
  fail("--device cuda: this quest was built without the CUDA backend");
#endif
}

std::unique_ptr<Engine> make_engine(const std::string& device, const ModelConfig& model,
                                    const QuantConfig& quant, const AdamWConfig& adamw, int64_t batch,
                                    const EngineOptions& options) {
  if (resolve_device(device) == "cpu") return std::make_unique<CpuEngine>(model, quant, adamw, batch);
#ifdef QUEST_HAVE_CUDA
  return make_cuda_engine(model, quant, adamw, batch, options);
#else
  fail("unreachable: no CUDA backend");  // resolve_device never answers "cuda" without it
#endif
}

}  // namespace quest
