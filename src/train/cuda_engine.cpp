// Host code of the CUDA engine (compiled only with the CUDA backend).
#ifdef QUEST_HAVE_CUDA
#include "train/cuda_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "model/cuda_backend.h"
#ifdef QUEST_HAVE_NCCL
#include "dist/nccl/nccl_communicator.h"
#endif
#include "ops/cuda/device_profile.h"
#include "ops/cuda/side_stream.h"
#include "model/llama.h"
#include "model/llama_graph.h"
#include "train/cuda_zero_adamw.h"
#include "train/mask_stats.h"
#include "train/model_io.h"

namespace quest {

namespace {

using cuda::bf16;

struct Group {
  int64_t offset, size;
  bool decay;
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& config, const QuantConfig& quant, const AdamWConfig& adamw, int64_t batch,
             const EngineOptions& options)
      : config_(config),
        quant_(quant),
        adamw_(adamw),
        batch_(batch),
        layout_(parameter_layout(config)),
        n_params_(layout_.back().offset + layout_.back().numel()) {
    // The weights' own work on a stream beside the main one (ops/cuda/side_stream.h says what
    // runs there): QUEST_WEIGHT_STREAM=0 keeps it on the main stream, for before/after
    // measurements in one binary; "low" gives it a lower priority than the main stream's. The
    // same results either way.
    const char* ws = std::getenv("QUEST_WEIGHT_STREAM");
    const std::string side_mode = ws ? ws : "";
    int least = 0, greatest = 0;
    QUEST_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    QUEST_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamDefault, side_mode == "low" ? greatest : least));
    if (side_mode != "0") side_ = std::make_unique<cuda::SideStream>(least);
    int device = 0;
    QUEST_CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    QUEST_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    device_name_ = std::string("cuda:") + prop.name;
    check_memory();
    blas_ = std::make_unique<cuda::Blas>();
    // The flat weights and gradients end in kRankSlack zeros: the padding of the ZeRO-1 blocks.
    params_ = DeviceBuffer<float>(n_params_ + kRankSlack);
    params_bf16_ = DeviceBuffer<bf16>(n_params_);
    grads_ = DeviceBuffer<float>(n_params_ + kRankSlack);
    m_ = DeviceBuffer<float>(n_params_);
    v_ = DeviceBuffer<float>(n_params_);
    const int64_t N = batch * config.seq_len;
    x_ = DeviceBuffer<int32_t>(N);
    y_ = DeviceBuffer<int32_t>(N);
    losses_ = DeviceBuffer<float>(N);
    norm_ = DeviceBuffer<float>(1);
    norm_scratch_ = DeviceBuffer<float>(cuda::norm_squared_scratch(n_params_));
    clip_ = DeviceBuffer<float>(1);
    host_losses_.resize(size_t(N));
    backend_ = std::make_unique<CudaBackend>(stream_, *blas_, params_.get(), params_bf16_.get(), batch,
                                             config.seq_len, config.d_model, config.n_head(), config.head_dim,
                                             side_.get());
    const float* master = params_;
    const bf16* copy = params_bf16_;
    graph_ = std::make_unique<LlamaGraph<CudaBackend>>(
        *backend_, config, batch,
        [&](const std::string&, int64_t in, int64_t out, int64_t rows) {
          return CudaLinear(std::make_unique<cuda::CudaLinearOp>(in, out, rows, quant, *blas_), stream_,
                            master, copy, side_.get());
        });
    for (const auto& t : layout_) {
      if (!groups_.empty() && groups_.back().decay == t.weight_decay() &&
          groups_.back().offset + groups_.back().size == t.offset)
        groups_.back().size += t.numel();
      else
        groups_.push_back({t.offset, t.numel(), t.weight_decay()});
    }
    // The options of EngineOptions (CudaLinearOp's header says what each changes).
    if (options.lowbit_product) {
      lowbit_ = std::make_unique<cuda::LowbitGemm>();
      input_codes_ = std::make_unique<cuda::InputCodeBuffer>();
      bool any = false;
      for (auto& lin : graph_->linears())
        for (auto* op : {&lin.qkv, &lin.wo, &lin.w1, &lin.w2, &lin.w3})
          any |= op->op().use_lowbit_product(lowbit_.get(), input_codes_.get());
      if (!any) {  // no layer has codes (bf16, 8 bits, LSQ, ...)
        lowbit_.reset();
        input_codes_.reset();
      }
    }
    if (options.share_input_quantization)
      for (auto& lin : graph_->linears()) lin.w2.op().share_input_quantization(lin.w1.op());
    // Learned quantizer parameters: one device float each, with their own moments.
    for (auto& lin : graph_->linears())
      for (auto* op : {&lin.qkv, &lin.wo, &lin.w1, &lin.w2, &lin.w3})
        for (auto& lp : op->op().learned_params()) learned_.push_back({lp.value, lp.grad});
    learned_m_ = DeviceBuffer<float>(int64_t(learned_.size()));
    learned_v_ = DeviceBuffer<float>(int64_t(learned_.size()));
    learned_bf16_ = DeviceBuffer<bf16>(1);
  }

  ~CudaEngine() override {
    if (side_) cudaStreamSynchronize(side_->get());  // its kernels read the ops' buffers
    graph_.reset();
    backend_.reset();
    side_.reset();
    cudaStreamDestroy(stream_);
  }

  std::string device() const override { return device_name_; }

  void init_weights(uint64_t seed) override {
    std::vector<float> host(static_cast<size_t>(n_params_));
    init_parameters(config_, host, seed);
    upload_params(host);
  }

  void set_micro_batches(int count) override {
    QUEST_CHECK(count >= 1, "{} micro-batches per step", count);
    micro_batches_ = count;
  }

  void zero_grads() override {
    micro_batch_ = 0;
    QUEST_CUDA_CHECK(cudaMemsetAsync(grads_, 0, sizeof(float) * size_t(n_params_), stream_));
    for (auto& l : learned_) QUEST_CUDA_CHECK(cudaMemsetAsync(l.grad, 0, sizeof(float), stream_));
  }

  // Data parallel (ZeRO-1 over NCCL, cuda_zero_adamw.h): `comm` is the job's communicator (MPI),
  // the bootstrap of an NCCL communicator over the ranks' GPUs; an NCCL communicator is used as it
  // is (the one-GPU tests). This process's GPU must be the one the engine was built on
  // (make_engine's local_rank).
  void set_communicator(Communicator& comm) override {
    if (zero_) return;
    Communicator* device_comm = &comm;
    if (comm.backend() != "nccl") {
      if (comm.size() == 1) return;  // one process: the unsharded AdamW
#ifdef QUEST_HAVE_NCCL
      int device = 0;
      QUEST_CUDA_CHECK(cudaGetDevice(&device));
      QUEST_CHECK(device == comm.local_rank(), "rank {}: the CUDA engine was built on GPU {}, but this rank's GPU is {}",
                  comm.rank(), device, comm.local_rank());
      own_comm_ = std::make_unique<NcclCommunicator>(comm, comm.timeout_s() > 0 ? comm.timeout_s() : 300.0);
      device_comm = own_comm_.get();
#else
      fail("data-parallel training on GPUs needs NCCL, and this quest was built without it: rebuild where "
           "NCCL is installed (CUDA's nccl.h and libnccl), or train on the CPU (--device cpu)");
#endif
    }
    QUEST_CHECK(device_comm->size() - 1 <= kRankSlack, "data parallel over {} GPUs: at most {} are supported",
                device_comm->size(), kRankSlack + 1);
    host_comm_ = &comm;
    std::vector<CudaZeroAdamW::Group> groups;
    for (const auto& g : groups_) groups.push_back({g.offset, g.size, g.decay});
    std::vector<CudaZeroAdamW::Learned> learned;
    for (const auto& l : learned_) learned.push_back({l.value, l.grad});
    NcclCommunicator* nccl = nullptr;
#ifdef QUEST_HAVE_NCCL
    if (device_comm->backend() == "nccl") nccl = static_cast<NcclCommunicator*>(device_comm);
#endif
    auto zero = std::make_unique<CudaZeroAdamW>(adamw_, std::move(groups), n_params_, std::move(learned),
                                                *device_comm, stream_, nccl);
    // The state so far (normally none) carries over into this rank's block; the whole moments go.
    std::vector<float> m = download(m_, n_params_), v = download(v_, n_params_);
    const auto lm = download(learned_m_, int64_t(learned_.size()));
    const auto lv = download(learned_v_, int64_t(learned_.size()));
    m.insert(m.end(), lm.begin(), lm.end());
    v.insert(v.end(), lv.begin(), lv.end());
    zero->set_moments(m, v, true);
    zero->set_step_count(t_);
    zero_ = std::move(zero);
    m_ = {};
    v_ = {};
  }

  double forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float scale) override {
    // Learned quantizer parameters (LSQ, PACT) initialize from the first inputs they see: in a job,
    // every rank from rank 0's micro-batch (a forward without gradients), as one process would.
    if (zero_ && host_comm_->size() > 1 && !learned_ready_) {
      if (has_uninitialized_learned()) {
        std::vector<int32_t> x0(x, x + B * T), y0(y, y + B * T);
        host_comm_->broadcast(x0.data(), int64_t(x0.size() * sizeof(int32_t)), 0);
        host_comm_->broadcast(y0.data(), int64_t(y0.size() * sizeof(int32_t)), 0);
        forward_loss(x0.data(), y0.data(), B, T);
      }
      learned_ready_ = true;  // every rank decided alike (the values are the same everywhere)
    }
    upload_tokens(x, y, B * T);
    graph_->forward(params_bf16_, x_, B, T);
    graph_->head(params_bf16_, grads_, y_, B * T, scale, losses_);
    // In the step's last micro-batch a data-parallel engine reduces each layer's gradients as soon
    // as they are complete, overlapping the rest of the backward pass.
    if (zero_ && zero_->can_overlap() && ++micro_batch_ == micro_batches_)
      graph_->backward(params_bf16_, grads_, x_, B, T, [this](int64_t offset, int64_t count) {
        join_weight_stream();  // the region's weight-gradient masks
        zero_->grads_ready(grads_, offset, count);
      });
    else
      graph_->backward(params_bf16_, grads_, x_, B, T);
    join_weight_stream();  // the gradients are complete on the main stream
    return loss_sum(B * T);
  }

  double forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                      float* losses = nullptr) override {
    upload_tokens(x, y, B * T);
    graph_->forward(params_bf16_, x_, B, T);
    graph_->head(params_bf16_, nullptr, y_, B * T, 0.0f, losses_);
    const double sum = loss_sum(B * T);
    if (losses) std::copy_n(host_losses_.begin(), B * T, losses);
    return sum;
  }

  void load_model(Model& model) override {
    join_weight_stream();
    learned_ready_ = false;
    check_loadable(model, config_, quant_);
    const auto src = model.named_linears();
    const auto ops = named_ops();
    QUEST_CHECK(src.size() == ops.size(), "load_model: {} linear layers, the engine has {}", src.size(), ops.size());
    // The learned quantizer parameters first: preparing the weights would initialize a weight
    // quantizer's (still 0) from the weights instead.
    const auto names = named_learned();
    size_t i = 0;
    for (const auto& [name, op] : src)
      for (const auto& lp : op->learned_params()) {
        QUEST_CHECK(i < names.size() && names[i] == std::pair(name, lp.name),
                    "load_model: learned quantizer parameter {}.{} has no place on the device", name, lp.name);
        upload(learned_[i++].value, lp.value.data(), 1);
      }
    QUEST_CHECK(i == learned_.size(), "load_model: {} learned quantizer parameters, the engine has {}", i,
                learned_.size());
    upload_params(model.params());
    // Fixed product weights (a packed export's codes, decoded on the CPU) go in as they stand,
    // rounded to bf16 as every product operand is, replacing what prepare_weights computed.
    int64_t largest = 0;
    for (const auto& [name, op] : src)
      if (op->product_weight_is_fixed()) largest = std::max(largest, op->in_features() * op->out_features());
    if (largest == 0) return;
    DeviceBuffer<float> w32(largest);
    DeviceBuffer<bf16> w16(largest);
    for (size_t k = 0; k < src.size(); ++k) {
      const LinearOp& from = *src[k].op;
      if (!from.product_weight_is_fixed()) continue;
      cuda::CudaLinearOp& to = ops[k].second->op();
      QUEST_CHECK(to.half_form() == from.half_form(),
                  "load_model: layer {} multiplies in the {} form on the device, the {} form on the CPU", src[k].name,
                  to.half_form() ? "half" : "full", from.half_form() ? "half" : "full");
      const int64_t n = from.in_features() * from.out_features();
      upload(w32.get(), from.product_weight(), n);
      cuda::to_bf16(w16, w32, n, stream_);
      to.set_product_weight(w16, stream_);  // a copy on the stream, before the next layer reuses w16
    }
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before w32 and w16 are freed
  }

  double step(double lr) override {
    join_weight_stream();  // the weights' last preparation has read the parameters the step writes
    if (zero_) {
      double norm = 0;
      {
        QUEST_DEVICE_PROFILE("zero_adamw", stream_);
        norm = zero_->step(lr, params_, params_bf16_, grads_);
      }
      graph_->prepare_weights(params_bf16_);
      return norm;
    }
    // Global norm: the flat gradients on the device, the few learned-parameter ones on the host.
    {
      QUEST_DEVICE_PROFILE("grad_norm", stream_);
      cuda::norm_squared(norm_, grads_, n_params_, norm_scratch_, stream_);
    }
    float sq = 0;
    QUEST_CUDA_CHECK(cudaMemcpyAsync(&sq, norm_.get(), sizeof(float), cudaMemcpyDeviceToHost, stream_));
    std::vector<float> lg(learned_.size());
    for (size_t i = 0; i < learned_.size(); ++i)
      QUEST_CUDA_CHECK(cudaMemcpyAsync(&lg[i], learned_[i].grad, sizeof(float), cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double total = sq;
    for (float g : lg) total += double(g) * g;
    const double norm = std::sqrt(total);
    const float clip = clip_factor(adamw_, norm);
    QUEST_CUDA_CHECK(cudaMemcpyAsync(clip_.get(), &clip, sizeof(float), cudaMemcpyHostToDevice, stream_));
    cuda::AdamWStep s = adamw_settings(adamw_, lr, ++t_);
    {
      QUEST_DEVICE_PROFILE("adamw", stream_);
      for (const auto& g : groups_) {
        s.weight_decay = g.decay ? float(adamw_.weight_decay) : 0.0f;
        cuda::adamw_update(params_.get() + g.offset, params_bf16_.get() + g.offset, grads_.get() + g.offset,
                           m_.get() + g.offset, v_.get() + g.offset, g.size, s, clip_, stream_);
      }
      s.weight_decay = float(adamw_.weight_decay);  // the reference decays LSQ/PACT parameters too
      for (size_t i = 0; i < learned_.size(); ++i)
        cuda::adamw_update(learned_[i].value, nullptr, learned_[i].grad, learned_m_.get() + i,
                           learned_v_.get() + i, 1, s, clip_, stream_);
    }
    graph_->prepare_weights(params_bf16_);
    return norm;
  }

  int64_t adam_steps() const override { return zero_ ? zero_->step_count() : t_; }

  void synchronize() override {
    join_weight_stream();
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    cuda::flush_device_profile();
  }

  std::vector<float> params() override { return download(params_, n_params_); }

  std::vector<StateArray> state() override {
    join_weight_stream();
    // Same order as the CPU engine: the moments hold the model's parameters, then the learned ones.
    std::vector<float> m, v;
    if (zero_) {
      // Collective; the gradients (consumed by the last step) serve as the gathering buffer.
      m = zero_->gather_m(grads_);
      v = zero_->gather_v(grads_);
    } else {
      m = download(m_, n_params_), v = download(v_, n_params_);
      const auto lm = download(learned_m_, int64_t(learned_.size()));
      const auto lv = download(learned_v_, int64_t(learned_.size()));
      m.insert(m.end(), lm.begin(), lm.end());
      v.insert(v.end(), lv.begin(), lv.end());
    }
    std::vector<StateArray> out = {{"params", params()}, {"adam.m", m}, {"adam.v", v}};
    size_t i = 0;
    for (const auto& [name, lp] : named_learned()) {
      float value = 0;
      QUEST_CUDA_CHECK(cudaMemcpy(&value, learned_[i++].value, sizeof(float), cudaMemcpyDeviceToHost));
      out.push_back({"quant." + name + "." + lp, {value}});
    }
    return out;
  }

  void restore(const Checkpoint& ck, bool with_quant_state) override {
    learned_ready_ = false;
    upload_params(ck.array("params", n_params_));
    const int64_t n_learned = int64_t(learned_.size());
    for (const char* name : {"adam.m", "adam.v"}) {
      auto it = ck.arrays.find(name);
      QUEST_CHECK(it != ck.arrays.end() && int64_t(it->second.size()) >= n_params_,
                  "the checkpoint has no matching optimizer state '{}'", name);
      const bool is_m = std::string(name) == "adam.m";
      if (with_quant_state && n_learned > 0)
        QUEST_CHECK(int64_t(it->second.size()) == n_params_ + n_learned,
                    "the checkpoint's optimizer state '{}' does not match the quantizers", name);
      if (zero_) continue;
      upload(is_m ? m_.get() : v_.get(), it->second.data(), n_params_);
      if (with_quant_state && n_learned > 0)
        upload(is_m ? learned_m_.get() : learned_v_.get(), it->second.data() + n_params_, n_learned);
    }
    t_ = ck.header.at("adam_step").get<int64_t>();
    if (zero_) {  // this rank's block of the moments; the learned ones whole
      const size_t keep = size_t(with_quant_state ? n_params_ + n_learned : n_params_);
      zero_->set_moments(std::span(ck.arrays.at("adam.m")).first(keep), std::span(ck.arrays.at("adam.v")).first(keep),
                         with_quant_state);
      zero_->set_step_count(t_);
    }
    if (with_quant_state) {
      size_t i = 0;
      for (const auto& [name, lp] : named_learned()) {
        const auto& saved = ck.array("quant." + name + "." + lp, 1);
        upload(learned_[i++].value, saved.data(), 1);
      }
    } else {
      // As CpuEngine::restore: 0 makes a new quantization's learned parameters initialize again,
      // from the loaded weights.
      for (auto& l : learned_) QUEST_CUDA_CHECK(cudaMemsetAsync(l.value, 0, sizeof(float), stream_));
    }
    graph_->prepare_weights(params_bf16_);
  }

  // The device masks copied into host MaskBits (layout-identical), then the CPU's statistics.
  nlohmann::json mask_statistics() override {
    std::vector<LayerMasks> layers;
    for (auto& [name, op] : named_ops())
      layers.push_back({name, download_mask(op->op().weight_quantizer(), host_masks_[name + ".w"]),
                        download_mask(op->op().input_quantizer(), host_masks_[name + ".x"])});
    return mask_stats_.snapshot(layers);
  }

 private:
  struct Learned {
    float* value;
    float* grad;
  };
  // Every linear layer with its parameter name ("layers.3.w1"), in layout order (as Model's).
  std::vector<std::pair<std::string, CudaLinear*>> named_ops() {
    std::vector<std::pair<std::string, CudaLinear*>> out;
    int64_t l = 0;
    for (auto& lin : graph_->linears()) {
      const std::string p = "layers." + std::to_string(l++) + ".";
      const std::pair<const char*, CudaLinear*> ops[] = {
          {"wqkv", &lin.qkv}, {"wo", &lin.wo}, {"w1", &lin.w1}, {"w2", &lin.w2}, {"w3", &lin.w3}};
      for (auto& [n, op] : ops) out.push_back({p + n, op});
    }
    return out;
  }
  std::vector<std::pair<std::string, std::string>> named_learned() {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& [name, op] : named_ops())
      for (auto& lp : op->op().learned_params()) out.push_back({name, lp.name});
    return out;
  }

  bool has_uninitialized_learned() {
    join_weight_stream();  // a weight quantizer's parameter initializes in prepare_weight
    for (const auto& l : learned_) {
      float value = 0;
      QUEST_CUDA_CHECK(cudaMemcpyAsync(&value, l.value, sizeof(float), cudaMemcpyDeviceToHost, stream_));
      QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (value == 0.0f) return true;
    }
    return false;
  }

  const MaskBits* download_mask(const cuda::DeviceQuantizer* q, MaskBits& host) {
    if (!q || !q->mask() || q->last_rows() <= 0) return nullptr;
    host.reset(q->last_rows(), q->cols());
    QUEST_CHECK(host.words_per_row() == q->words_per_row(), "mask layouts differ");
    QUEST_CUDA_CHECK(cudaMemcpyAsync(host.row(0), q->mask(), sizeof(uint64_t) * host.words().size(),
                                     cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return &host;
  }

  void check_memory() {
    size_t free_bytes = 0, total_bytes = 0;
    QUEST_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const int64_t need = cuda_engine_bytes(config_, quant_, batch_);
    QUEST_CHECK(need < int64_t(free_bytes),
                "{} needs about {:.2f} GiB of GPU memory for a micro-batch of {} x {} tokens, but only {:.2f} GiB "
                "of {:.2f} GiB are free: lower --batch-size (and raise --grad-accum)",
                device_name_, need / 1073741824.0, batch_, config_.seq_len, free_bytes / 1073741824.0,
                total_bytes / 1073741824.0);
    log_info("{}: planned {:.2f} GiB of {:.2f} GiB free", device_name_, need / 1073741824.0,
             free_bytes / 1073741824.0);
  }

  void upload_tokens(const int32_t* x, const int32_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      QUEST_CHECK(x[i] >= 0 && x[i] < config_.vocab_size && y[i] >= 0 && y[i] < config_.vocab_size,
                  "token id out of the vocabulary [0, {})", config_.vocab_size);
    upload(x_.get(), x, n);
    upload(y_.get(), y, n);
  }
  double loss_sum(int64_t n) {
    QUEST_CUDA_CHECK(cudaMemcpyAsync(host_losses_.data(), losses_.get(), sizeof(float) * size_t(n),
                                     cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += host_losses_[i];
    return sum;
  }
  void upload_params(std::span<const float> host) {
    join_weight_stream();
    upload(params_.get(), host.data(), n_params_);
    cuda::to_bf16(params_bf16_, params_, n_params_, stream_);
    graph_->prepare_weights(params_bf16_);
  }
  // The main stream waits for the work issued to the weight stream so far.
  void join_weight_stream() {
    if (side_) side_->join(stream_);
  }
  template <class T>
  void upload(T* dst, const T* src, int64_t n) {
    QUEST_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(T) * size_t(n), cudaMemcpyHostToDevice, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));  // src may be a temporary
  }
  std::vector<float> download(const float* src, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    QUEST_CUDA_CHECK(cudaMemcpyAsync(out.data(), src, sizeof(float) * size_t(n), cudaMemcpyDeviceToHost, stream_));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }

  ModelConfig config_;
  QuantConfig quant_;
  AdamWConfig adamw_;
  int64_t batch_;
  std::vector<ParamTensor> layout_;
  int64_t n_params_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::SideStream> side_;  // the weights' own work, or null (all on stream_)
  std::unique_ptr<cuda::Blas> blas_;
  std::unique_ptr<cuda::LowbitGemm> lowbit_;  // declared after blas_: the ops hold pointers to both
  std::unique_ptr<cuda::InputCodeBuffer> input_codes_;  // the integer products' input codes
  DeviceBuffer<float> params_, grads_, m_, v_, losses_, norm_, norm_scratch_, clip_, learned_m_, learned_v_;
  DeviceBuffer<bf16> params_bf16_, learned_bf16_;
  DeviceBuffer<int32_t> x_, y_;
  std::vector<float> host_losses_;
  std::unique_ptr<CudaBackend> backend_;
  std::unique_ptr<LlamaGraph<CudaBackend>> graph_;
  std::vector<Group> groups_;
  std::vector<Learned> learned_;
  std::map<std::string, MaskBits> host_masks_;
  MaskStatistics mask_stats_;
  int64_t t_ = 0;
  // Data parallel: the job's communicator, the NCCL one built over it, the sharded optimizer.
  static constexpr int64_t kRankSlack = 1023;
  Communicator* host_comm_ = nullptr;
  int micro_batches_ = 1, micro_batch_ = 0;  // per step; forward_backward() calls since zero_grads()
  bool learned_ready_ = false;  // the learned quantizer parameters are known to be initialized
  std::unique_ptr<Communicator> own_comm_;
  std::unique_ptr<CudaZeroAdamW> zero_;
};

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error: no driver or no device means no GPU
    return 0;
  }
  return n;
}

int64_t cuda_engine_bytes(const ModelConfig& c, const QuantConfig& quant, int64_t batch) {
  const auto layout = parameter_layout(c);
  const int64_t P = layout.back().offset + layout.back().numel();
  const int64_t N = batch * c.seq_len, d = c.d_model, H = c.hidden_dim(), L = c.n_layer;
  const int64_t Vp = c.padded_vocab(), nh = c.n_head();
  int64_t bytes = P * (4 + 2 + 4 + 4 + 4);  // master, bf16 copy, grads, m, v
  // Per layer: the fp32 residual (in, mid), six bf16 [N, d] and three [N, H], rstd and lse.
  const int64_t acts_per_layer = 4 * 2 * N * d + 2 * (6 * N * d + 3 * N * H) + 4 * (2 * N + batch * nh * c.seq_len);
  // Once: the fp32 final residual and its gradient, bf16 scratch, losses and tokens.
  bytes += L * acts_per_layer + 4 * 2 * N * d + 2 * (11 * N * d + 3 * N * H) + 4 * N * 4;
  bytes += 2 * std::min<int64_t>(CudaBackend::kHeadChunkElements, N * Vp);
  // The linear layers' own buffers (product weights and inputs, dW scratch, quantizer state,
  // weight codes; CudaLinearOp::device_bytes), and for the integer products the stream's one
  // buffer of input codes and LowbitGemm's scratch and workspace, assumed wherever something is
  // quantized (an upper bound). tests/cuda/test_cuda_memory_plan.cpp checks the plan bounds use.
  const bool lowbit = quant.quantized();
  const std::pair<int64_t, int64_t> linears[] = {{d, 3 * d}, {d, d}, {d, H}, {d, H}, {H, d}};
  for (const auto& [in, out] : linears)
    bytes += L * cuda::CudaLinearOp::device_bytes(in, out, N, quant, lowbit);
  if (lowbit)
    bytes += N * std::max(d, H) + int64_t(cuda::LowbitGemm::kDefaultScratchBytes +
                                          cuda::LowbitGemm::kDefaultWorkspaceBytes);
  // Two Blas workspaces (main and weight stream), scratch, kernels loaded at first launch, slack.
  bytes += int64_t(256) << 20;
  return bytes;
}

std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& model, const QuantConfig& quant,
                                         const AdamWConfig& adamw, int64_t batch, const EngineOptions& options) {
  const int local_rank = options.local_rank;
  const int count = cuda_device_count();
  QUEST_CHECK(local_rank >= 0 && local_rank < count,
              "local rank {} has no GPU of its own ({} on this node): start at most one rank per GPU", local_rank, count);
  QUEST_CUDA_CHECK(cudaSetDevice(local_rank));
  return std::make_unique<CudaEngine>(model, quant, adamw, batch, options);
}

}  // namespace quest
#endif  // QUEST_HAVE_CUDA
