#pragma once
// The GPU's SM clock and board power, sampled about every millisecond by a host thread while a
// benchmark runs, each sample filed under what the benchmark said it was running (tag). At the
// power cap the clock moves with what runs (and with what ran just before), so a stream's times
// need the clocks they ran at to be read.
//
// NVML comes from the driver (libnvidia-ml.so.1, loaded at run time: the toolkit has no NVML
// header on every machine we build on, and a benchmark must still run where there is no NVML).
// Only the calls used are declared, with NVML's C ABI: return 0 on success, the device an opaque
// handle, clocks in MHz, power in milliwatts.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include <cuda_runtime.h>

namespace quest::bench {

class ClockSampler {
 public:
  struct Mean {
    int samples = 0;
    double mhz = 0, watts = 0;
  };

  // device: the CUDA device to sample (matched to NVML's by its PCI bus id).
  explicit ClockSampler(int device) {
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib_) return;
    using Init = int (*)();
    using ByBusId = int (*)(const char*, void**);
    const auto init = reinterpret_cast<Init>(dlsym(lib_, "nvmlInit_v2"));
    const auto by_bus = reinterpret_cast<ByBusId>(dlsym(lib_, "nvmlDeviceGetHandleByPciBusId_v2"));
    clock_ = reinterpret_cast<ClockFn>(dlsym(lib_, "nvmlDeviceGetClockInfo"));
    power_ = reinterpret_cast<PowerFn>(dlsym(lib_, "nvmlDeviceGetPowerUsage"));
    if (!init || !by_bus || !clock_ || !power_ || init() != 0) return;
    inited_ = true;
    char bus[32] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, device) != cudaSuccess || by_bus(bus, &dev_) != 0)
      return;
    ok_ = true;
    thread_ = std::thread([this] { run(); });
  }
  ~ClockSampler() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (inited_) {
      if (const auto shut = reinterpret_cast<int (*)()>(dlsym(lib_, "nvmlShutdown"))) shut();
    }
    if (lib_) dlclose(lib_);
  }
  ClockSampler(const ClockSampler&) = delete;
  ClockSampler& operator=(const ClockSampler&) = delete;

  bool available() const { return ok_; }

  // Samples from now on are filed under tag (< 0: not kept).
  void tag(int t) { tag_ = t; }

  // The mean clock and power of the samples filed under tag so far; forgets them.
  Mean take(int t) {
    std::lock_guard<std::mutex> lock(mu_);
    const Mean m = sums_[t];
    sums_.erase(t);
    if (m.samples == 0) return m;
    return {m.samples, m.mhz / m.samples, m.watts / m.samples};
  }

 private:
  using ClockFn = int (*)(void*, int, unsigned*);
  using PowerFn = int (*)(void*, unsigned*);
  static constexpr int kClockSm = 1;  // NVML_CLOCK_SM

  void run() {
    while (!stop_) {
      const int t = tag_;
      unsigned mhz = 0, mw = 0;
      if (t >= 0 && clock_(dev_, kClockSm, &mhz) == 0 && power_(dev_, &mw) == 0) {
        std::lock_guard<std::mutex> lock(mu_);
        Mean& s = sums_[t];
        ++s.samples, s.mhz += mhz, s.watts += mw / 1000.0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void* lib_ = nullptr;
  void* dev_ = nullptr;
  ClockFn clock_ = nullptr;
  PowerFn power_ = nullptr;
  bool inited_ = false, ok_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int> tag_{-1};
  std::mutex mu_;
  std::map<int, Mean> sums_;  // running sums until take()
  std::thread thread_;
};

}  // namespace quest::bench
