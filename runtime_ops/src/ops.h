// The three kernels of domain ai.dc_onnx (see docs/format.md, "Op schemas").
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "dense_conv.h"
#include "ort_api.h"
#include "sparse_matmul.h"

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
  CodedRows w_;
};

// weight_side 1: Y = X @ Wm^T; weight_side 0: Y = Wm @ X.
class MatMulKernel {
 public:
  explicit MatMulKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  bool weight_first_ = false;  // weight_side == 0
  CodedRows w_;
};

// ONNX Conv, 1-D and 2-D (1-D runs as 2-D with a height of 1).
class ConvKernel {
 public:
  explicit ConvKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  int64_t out_channels_ = 0, group_ = 1, in_per_group_ = 0;
  int64_t kh_ = 1, kw_ = 1, sh_ = 1, sw_ = 1, dh_ = 1, dw_ = 1;
  int64_t pads_[4] = {0, 0, 0, 0};  // top, left, bottom, right
  std::string auto_pad_ = "NOTSET";
  bool one_d_ = false;
  // Resident weight: per output channel, its non-zero taps as a one-byte codebook index
  // and a key (input channel << tap_bits_) | (ky * kw + kx): 5 bytes per non-zero.
  std::vector<size_t> tap_ptr_;  // out_channels + 1 offsets into codes_ and keys_
  std::vector<uint8_t> codes_;
  std::vector<uint32_t> keys_;
  std::array<float, 256> codebook_{};
  unsigned tap_bits_ = 0;
  std::unique_ptr<DenseConv> dense_;  // set for layers above kDenseConvDensity
};

}  // namespace dc_onnx
