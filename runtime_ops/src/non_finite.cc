#include "non_finite.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"

namespace dc_onnx {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline bool non_finite(float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0x7f800000u) == 0x7f800000u;  // exponent all ones: Inf or NaN
}

}  // namespace

DC_ONNX_HOT bool any_non_finite(const float* x, size_t count) {
  uint32_t found = 0;  // an OR over all elements: vectorizes, no early exit needed
  for (size_t i = 0; i < count; ++i) found |= static_cast<uint32_t>(non_finite(x[i]));
  return found != 0;
}

void nan_through_absent(const ClusterRows& w, const float* x, int64_t x_stride, float* y,
                        int64_t y_stride) {
  std::vector<char> bad(static_cast<size_t>(w.cols));
  int64_t num_bad = 0;
  for (int64_t j = 0; j < w.cols; ++j) {
    bad[static_cast<size_t>(j)] = non_finite(x[j * x_stride]) ? 1 : 0;
    num_bad += bad[static_cast<size_t>(j)];
  }
  if (num_bad == 0) return;
  for (int64_t n = 0; n < w.rows; ++n) {
    // A row holds each column at most once: fewer bad columns present than bad columns
    // means one of them is absent from the row.
    int64_t present = 0;
    for_each_entry(w, n, [&](uint32_t j, float) { present += bad[j]; });
    if (present < num_bad) y[n * y_stride] = kNaN;
  }
}

void conv_nan_through_absent(const ConvTaps& w, const ConvAttributes& a, const ConvProblem& pr,
                             const float* x, float* y) {
  // Counting, so the cost stays that of a sparse conv whatever the number of NaNs: per
  // output position q, `field` counts the (channel, tap) slots of the group's receptive
  // field whose input is not finite, `present` those among them a stored tap covers;
  // an absent one exists where field > present.
  const int64_t in_h = pr.in_h, in_w = pr.in_w, out_h = pr.out_h, out_w = pr.out_w;
  const int64_t plane_in = in_h * in_w, plane_out = out_h * out_w;
  const int64_t out_per_group = a.out_channels / a.group;
  std::vector<int32_t> bad(static_cast<size_t>(plane_in));   // per pixel, over the group
  std::vector<int32_t> rows(static_cast<size_t>(in_h * out_w));  // bad summed over kx
  std::vector<int32_t> field(static_cast<size_t>(plane_out));
  std::vector<int32_t> present(static_cast<size_t>(plane_out));
  std::vector<char> channel_bad(static_cast<size_t>(a.in_per_group));
  auto in_row = [&](int64_t oh, int64_t ky) { return oh * a.sh + ky * a.dh - pr.pad_top; };
  auto in_col = [&](int64_t ow, int64_t kx) { return ow * a.sw + kx * a.dw - pr.pad_left; };
  for (int64_t g = 0; g < a.group; ++g) {
    const float* xg = x + g * a.in_per_group * plane_in;
    std::fill(bad.begin(), bad.end(), 0);
    bool any = false;
    for (int64_t c = 0; c < a.in_per_group; ++c) {
      bool in_channel = false;
      for (int64_t i = 0; i < plane_in; ++i)
        if (non_finite(xg[c * plane_in + i])) {
          ++bad[static_cast<size_t>(i)];
          in_channel = true;
        }
      channel_bad[static_cast<size_t>(c)] = in_channel;
      any = any || in_channel;
    }
    if (!any) continue;
    // field = sum over (ky, kx) of bad at the tap's input, summed over kx first.
    for (int64_t ih = 0; ih < in_h; ++ih)
      for (int64_t ow = 0; ow < out_w; ++ow) {
        int32_t sum = 0;
        for (int64_t kx = 0; kx < a.kw; ++kx) {
          const int64_t iw = in_col(ow, kx);
          if (iw >= 0 && iw < in_w) sum += bad[static_cast<size_t>(ih * in_w + iw)];
        }
        rows[static_cast<size_t>(ih * out_w + ow)] = sum;
      }
    for (int64_t oh = 0; oh < out_h; ++oh)
      for (int64_t ow = 0; ow < out_w; ++ow) {
        int32_t sum = 0;
        for (int64_t ky = 0; ky < a.kh; ++ky) {
          const int64_t ih = in_row(oh, ky);
          if (ih >= 0 && ih < in_h) sum += rows[static_cast<size_t>(ih * out_w + ow)];
        }
        field[static_cast<size_t>(oh * out_w + ow)] = sum;
      }
    const uint32_t mask = (uint32_t{1} << w.tap_bits) - 1;
    for (int64_t o = g * out_per_group; o < (g + 1) * out_per_group; ++o) {
      std::fill(present.begin(), present.end(), 0);
      for (size_t j = w.ptr[static_cast<size_t>(o)]; j < w.ptr[static_cast<size_t>(o) + 1]; ++j) {
        const uint32_t key = w.key(j), c = key >> w.tap_bits;
        if (!channel_bad[c]) continue;
        const int64_t r = key & mask, ky = r / a.kw, kx = r % a.kw;
        const float* xc = xg + static_cast<int64_t>(c) * plane_in;
        for (int64_t oh = 0; oh < out_h; ++oh) {
          const int64_t ih = in_row(oh, ky);
          if (ih < 0 || ih >= in_h) continue;
          for (int64_t ow = 0; ow < out_w; ++ow) {
            const int64_t iw = in_col(ow, kx);
            if (iw >= 0 && iw < in_w && non_finite(xc[ih * in_w + iw]))
              ++present[static_cast<size_t>(oh * out_w + ow)];
          }
        }
      }
      float* yo = y + o * plane_out;
      for (int64_t q = 0; q < plane_out; ++q)
        if (field[static_cast<size_t>(q)] > present[static_cast<size_t>(q)]) yo[q] = kNaN;
    }
  }
}

}  // namespace dc_onnx
