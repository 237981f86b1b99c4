// The attributes of one CompressedConv node (ONNX Conv's, plus the weight shape), read
// and checked once at kernel creation and kept in one place: the sparse taps
// (sparse_conv.h) and ORT's dense Conv (dense_conv.h) both read them from here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ort_api.h"

namespace dc_onnx {

// Normalised to 2-D: a 1-D convolution is a 2-D one of height 1 (kh = sh = dh = 1, no
// top or bottom pad), which one_d remembers for the shapes and ORT's attribute lists.
struct ConvAttributes {
  int64_t out_channels = 0, in_per_group = 0, group = 1;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pads[4] = {0, 0, 0, 0};  // top, left, bottom, right
  std::string auto_pad = "NOTSET";
  bool one_d = false;

  // The ONNX attribute lists in the node's own rank.
  std::vector<int64_t> kernel_shape() const { return per_axis(kh, kw); }
  std::vector<int64_t> strides() const { return per_axis(sh, sw); }
  std::vector<int64_t> dilations() const { return per_axis(dh, dw); }
  std::vector<int64_t> pad_list() const;

  int64_t taps_per_channel() const { return kh * kw; }

 private:
  std::vector<int64_t> per_axis(int64_t h, int64_t w) const {
    return one_d ? std::vector<int64_t>{w} : std::vector<int64_t>{h, w};
  }
};

// Reads group, kernel_shape, strides, dilations, pads and auto_pad (ONNX defaults when
// absent) for a weight of `weight_shape` [M, C/group, k...]. Throws dc_onnx::Error.
ConvAttributes read_conv_attributes(const OrtKernelInfo* info,
                                    const std::vector<int64_t>& weight_shape);

// Output length and leading pad along one axis (ONNX Conv / ORT rules for auto_pad).
// Throws dc_onnx::Error (invalid argument) when the input is too short.
int64_t output_size(const std::string& auto_pad, int64_t in, int64_t k, int64_t stride,
                    int64_t dilation, int64_t pad_begin, int64_t pad_end, int64_t* pad_used);

}  // namespace dc_onnx
