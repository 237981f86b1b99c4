// The sparse convolution behind CompressedConv (the loops; op_conv.cc sets up and
// dispatches): each non-zero kernel tap adds value * (the input shifted by the tap's
// offset) to the output plane, so the work is proportional to the non-zeros and no
// im2col buffer is built.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "activation.h"
#include "conv_attributes.h"
#include "ort_api.h"
#include "sparse_weight.h"

namespace dc_onnx {

// Per output channel, where each block of input channels starts among its taps, for the
// few block sizes Runs have used (the block size follows the input's width): found by
// binary search once, not on every Run, where on a 7x7 layer they took about as long as
// the panels themselves.
struct BlockStartsCache {
  static constexpr size_t kSizes = 4;  // the latest block sizes kept
  std::mutex mutex;
  std::vector<std::pair<int64_t, std::shared_ptr<const std::vector<size_t>>>> by_block;
};

// Resident weight: per output channel, its non-zero taps as a one-byte codebook index
// and a key (input channel << tap_bits) | (ky * kw + kx), 16-bit when every key fits
// (in_per_group << tap_bits <= 65536: a 3x3 layer up to 4096 input channels per group),
// else 32-bit: 3 bytes per non-zero (5 past that). The kernel streams the keys once per
// panel, so their width is also memory traffic per Run.
struct ConvTaps {
  std::vector<size_t> ptr;  // out_channels + 1 offsets into code and the keys
  std::vector<uint8_t> code;
  std::vector<uint16_t> key16;  // the keys, when they fit in 16 bits
  std::vector<uint32_t> key32;  // otherwise (key16 then empty)
  std::array<float, 256> codebook{};
  std::vector<float> row_scale;  // empty, or one per output channel (applied to the sums)
  unsigned tap_bits = 0;
  std::shared_ptr<BlockStartsCache> block_starts = std::make_shared<BlockStartsCache>();

  uint32_t key(size_t j) const { return key32.empty() ? key16[j] : key32[j]; }
};

// Repacks the decoded [M, C/group * kh * kw] matrix into tap keys.
ConvTaps pack_taps(const CsrMatrix& w, int64_t taps_per_channel);

// One Run: X [batch, channels, in_h, in_w] into Y [batch, M, out_h, out_w] (1-D: height 1),
// pads already resolved for auto_pad; `bias` [M] or null.
struct ConvProblem {
  const float* x;
  int64_t batch, channels, in_h, in_w;
  int64_t out_h, out_w, pad_top, pad_left;
  const float* bias;
  float* y;
};

// Bound on the scratch memory of one Run (phase planes and partial sums): larger images
// are computed in bands of output rows. Taken from the session's allocator (scratch.h),
// so it is reused by every layer and Run; concurrent Runs take one each.
constexpr int64_t kConvScratchBytes = int64_t{2} << 20;

// Y = act(Conv(X, W) + B), on the session's thread pool, one image (and within it one
// band of output rows) at a time.
void sparse_conv(const Ort::KernelContext& ctx, const ConvTaps& w, const ConvAttributes& a,
                 const Activation& act, const ConvProblem& pr);

}  // namespace dc_onnx
