// quest::Error thrown on behalf of the CUDA ops. A host-compiled file on purpose: core/error.h
// pulls in fmt, whose constexpr machinery (fmt 9) does not survive nvcc, so no .cu file includes
// it. Plain C++ (no CUDA headers), harmless in builds without CUDA.
#include <string>

#include "core/error.h"

namespace quest::cuda::detail {

[[noreturn]] void raise_message(const std::string& message) { throw Error(message); }

}  // namespace quest::cuda::detail
