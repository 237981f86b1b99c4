// ORT's own Conv (CreateOp/InvokeOp) on a decoded weight, for convolution layers so
// dense that skipping zeros cannot pay for itself (AlexNet's conv1 keeps 84%): there
// ORT's im2col + GEMM is faster. Only such layers are decoded to fp32; they are the
// small first layers, so the resident size barely moves.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "conv_attributes.h"
#include "ort_api.h"

namespace dc_onnx {

// Above this fraction of non-zero weights a convolution runs dense.
constexpr double kDenseConvDensity = 0.5;

class DenseConv {
 public:
  // `weight` holds W [M, C/group, k...] row-major with `shape`; `with_bias`: input 6
  // exists. `attrs.auto_pad` must be NOTSET or VALID: the SAME_* corner cases differ
  // between ORT releases.
  DenseConv(const OrtKernelInfo* info, std::shared_ptr<const std::vector<float>> weight,
            std::vector<int64_t> shape, const ConvAttributes& attrs, bool with_bias);

  // Y (already allocated with the right shape) = Conv(X, W[, B]).
  void run(const Ort::KernelContext& ctx, const OrtValue* x, const OrtValue* bias,
           OrtValue* y) const;

 private:
  std::shared_ptr<const std::vector<float>> weight_;  // may be shared with other nodes
  std::vector<int64_t> shape_;
  Ort::MemoryInfo memory_;
  Ort::Value weight_value_{nullptr};
  Ort::Op op_{nullptr};
  bool with_bias_;
};

}  // namespace dc_onnx
