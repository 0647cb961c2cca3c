#pragma once
// Facts about a CUDA device that launchers need on every call (persistent grids are sized by the
// SM count), cached per device: cudaDeviceGetAttribute costs host time on a launch path that
// otherwise only encodes arguments. Host code; thread-safe.
namespace quest::cuda {

// The number of streaming multiprocessors of `device` (queried once per device; quest::Error
// if the query fails).
int device_sm_count(int device);

}  // namespace quest::cuda
