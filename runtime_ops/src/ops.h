// The three kernels of domain ai.dc_onnx (see docs/format.md, "Op schemas").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "activation.h"
#include "conv_attributes.h"
#include "dense_conv.h"
#include "ort_api.h"
#include "sparse_conv.h"
#include "sparse_matmul.h"

namespace dc_onnx {

// Y = act(alpha * A' @ Wm^T + beta * C), Wm the stored [N, K] matrix, act the fused
// activation (none unless the node has one).
class GemmKernel {
 public:
  explicit GemmKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  float alpha_ = 1.0f;
  float beta_ = 1.0f;
  bool trans_a_ = false;
  Activation act_;
  std::shared_ptr<const CodedRows> w_;  // shared by the nodes that read the same weight
};

// weight_side 1: Y = act(X @ Wm^T); weight_side 0: Y = act(Wm @ X).
class MatMulKernel {
 public:
  explicit MatMulKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  bool weight_first_ = false;  // weight_side == 0
  Activation act_;
  std::shared_ptr<const CodedRows> w_;  // shared by the nodes that read the same weight
};

// A Conv weight as the kernel keeps it: sparse taps, or dense fp32 for ORT's own Conv.
struct ConvWeight {
  bool dense = false;
  ConvTaps taps;              // !dense
  std::vector<float> values;  // dense: W [M, C/group, k...] row-major, row scales applied
};

// ONNX Conv, 1-D and 2-D (1-D runs as 2-D with a height of 1), then the fused activation.
class ConvKernel {
 public:
  explicit ConvKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  // Input 6 when present, checked to be [M]; null otherwise.
  const float* bias_input(const Ort::KernelContext& ctx) const;

  std::string prefix_;
  ConvAttributes attrs_;
  Activation act_;
  std::shared_ptr<const ConvWeight> weight_;  // shared by the nodes that read it
  std::unique_ptr<DenseConv> dense_;  // ORT's Conv, for layers above kDenseConvDensity
};

}  // namespace dc_onnx
