// The three kernels of domain ai.dc_onnx (see docs/format.md, "Op schemas").
#pragma once

#include <string>
#include <vector>

#include "ort_api.h"
#include "sparse_weight.h"

namespace dc_onnx {

// Y = alpha * A' @ Wm^T + beta * C, Wm the stored [N, K] matrix.
class GemmKernel {
 public:
  explicit GemmKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  float alpha_ = 1.0f;
  float beta_ = 1.0f;
  bool trans_a_ = false;
  CsrMatrix w_;
};

// weight_side 1: Y = X @ Wm^T; weight_side 0: Y = Wm @ X.
class MatMulKernel {
 public:
  explicit MatMulKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  bool weight_first_ = false;  // weight_side == 0
  CsrMatrix w_;
};

// ONNX Conv, 1-D and 2-D (1-D runs as 2-D with a height of 1).
class ConvKernel {
 public:
  explicit ConvKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

  // One non-zero kernel tap of an output channel.
  struct Tap {
    int64_t channel;  // input channel within the group
    int64_t ky, kx;   // kernel offsets
    float value;
  };

 private:
  std::string prefix_;
  int64_t out_channels_ = 0, group_ = 1, in_per_group_ = 0;
  int64_t kh_ = 1, kw_ = 1, sh_ = 1, sw_ = 1, dh_ = 1, dw_ = 1;
  int64_t pads_[4] = {0, 0, 0, 0};  // top, left, bottom, right
  std::string auto_pad_ = "NOTSET";
  bool one_d_ = false;
  std::vector<size_t> tap_ptr_;  // out_channels + 1 offsets into taps_
  std::vector<Tap> taps_;
};

}  // namespace dc_onnx
