#pragma once
// The constants of QUEST_SPEC.md sections 3-4, exactly as the spec gives them.
#include <cstdint>

namespace quest {

// ALPHA[b]: the MSE-optimal clip value (in units of rms) of the centered 2^b-level uniform grid for a
// standard Gaussian. Index 0 is unused. tests/quant re-derives these numerically.
inline constexpr double kAlpha[9] = {
    0.0,
    0.7978845587140913,  // sqrt(2/pi)
    1.4935346200015913,
    2.051068354131873,
    2.513930578568423,
    2.9160938834961225,
    3.276597282593217,
    3.6010497188221655,
    3.884938678807525,
};

inline constexpr int kMinBits = 1;
inline constexpr int kMaxBits = 8;

// TRUST[b] = ALPHA[b] / (2^b - 1): half a grid step, in units of rms (the default trust mask width).
inline constexpr double default_trust(int bits) { return kAlpha[bits] / double((1 << bits) - 1); }

// 1-bit QuEST uses a clip mask |x_h| <= 1.3 * scale instead of the trust mask (the paper's "outer
// trust factor").
inline constexpr double kOneBitClip = 1.3;

// e2m1 (fp4): levels kFp4Unit * rms * {0, 0.5, 1, 1.5, 2, 3, 4, 6} (the spec's 0.487079, with the
// digits of the reference's level table).
inline constexpr double kFp4Unit = 0.48707976;
inline constexpr float kFp4Levels[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

}  // namespace quest
