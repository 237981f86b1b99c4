// The activation a compute op applies to its outputs after the bias (attributes
// `activation` and `activation_params`, docs/format.md): the compiler folds a Relu, Clip
// or LeakyRelu that only reads the op's output into the op, so the output is written once
// instead of written, read and written again. Each formula is the one ORT's own kernel
// uses (Eigen's cwiseMax/cwiseMin and select), so a fused op gives the bits of the
// unfused graph, NaN and -0 included; the epilogues that call it are scalar code shared
// by every ISA path.
#pragma once

#include <cstddef>

#include "ort_api.h"

namespace dc_onnx {

struct Activation {
  enum class Kind { kNone, kRelu, kClip, kLeakyRelu };
  Kind kind = Kind::kNone;
  float lo = 0.0f;     // Clip: min (float lowest when the node had none)
  float hi = 0.0f;     // Clip: max (float max when the node had none)
  float alpha = 0.0f;  // LeakyRelu

  float operator()(float v) const {
    switch (kind) {
      case Kind::kRelu: return v < 0.0f ? 0.0f : v;
      case Kind::kClip: {
        const float m = v < lo ? lo : v;
        return hi < m ? hi : m;
      }
      case Kind::kLeakyRelu: return v >= 0.0f ? v : alpha * v;
      default: return v;
    }
  }

  // y[0 .. n) = act(y[0 .. n)), one loop per kind so each vectorises.
  void apply(float* y, size_t n) const;
};

// The node's `activation` / `activation_params` attributes, checked (throws naming them);
// no `activation` attribute: Kind::kNone.
Activation read_activation(const OrtKernelInfo* info);

}  // namespace dc_onnx
