#include "non_finite.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace dc_onnx {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline bool non_finite(float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0x7f800000u) == 0x7f800000u;  // exponent all ones: Inf or NaN
}

template <typename Index>
void mark_rows(const CodedRows& w, const Index* col, const std::vector<uint32_t>& bad, float* y,
               int64_t y_stride) {
  for (int64_t n = 0; n < w.rows; ++n) {
    // Both lists are sorted: walk them together, looking for a bad column row n lacks.
    size_t j = w.ptr[static_cast<size_t>(n)];
    const size_t end = w.ptr[static_cast<size_t>(n) + 1];
    for (const uint32_t k : bad) {
      while (j < end && col[j] < k) ++j;
      if (j == end || col[j] != k) {
        y[n * y_stride] = kNaN;
        break;
      }
    }
  }
}

}  // namespace

bool any_non_finite(const float* x, size_t count) {
  uint32_t found = 0;  // an OR over all elements: vectorizes, no early exit needed
  for (size_t i = 0; i < count; ++i) found |= static_cast<uint32_t>(non_finite(x[i]));
  return found != 0;
}

void nan_through_absent(const CodedRows& w, const float* x, int64_t x_stride, float* y,
                        int64_t y_stride) {
  std::vector<uint32_t> bad;
  for (int64_t j = 0; j < w.cols; ++j)
    if (non_finite(x[j * x_stride])) bad.push_back(static_cast<uint32_t>(j));
  if (bad.empty()) return;
  if (w.col32.empty())
    mark_rows(w, w.col16.data(), bad, y, y_stride);
  else
    mark_rows(w, w.col32.data(), bad, y, y_stride);
}

void conv_nan_through_absent(const ConvTaps& w, const ConvAttributes& a, const ConvProblem& pr,
                             const float* x, float* y) {
  const int64_t out_per_group = a.out_channels / a.group;
  const int64_t plane_in = pr.in_h * pr.in_w;
  const int64_t plane_out = pr.out_h * pr.out_w;
  for (int64_t c = 0; c < pr.channels; ++c)
    for (int64_t i = 0; i < pr.in_h; ++i)
      for (int64_t j = 0; j < pr.in_w; ++j) {
        if (!non_finite(x[c * plane_in + i * pr.in_w + j])) continue;
        const int64_t group = c / a.in_per_group;
        const auto channel = static_cast<uint32_t>(c % a.in_per_group);
        for (int64_t ky = 0; ky < a.kh; ++ky) {
          // Output row oh reads input row oh * sh + ky * dh - pad_top.
          const int64_t ty = i + pr.pad_top - ky * a.dh;
          if (ty < 0 || ty % a.sh != 0 || ty / a.sh >= pr.out_h) continue;
          for (int64_t kx = 0; kx < a.kw; ++kx) {
            const int64_t tx = j + pr.pad_left - kx * a.dw;
            if (tx < 0 || tx % a.sw != 0 || tx / a.sw >= pr.out_w) continue;
            const int64_t q = (ty / a.sh) * pr.out_w + tx / a.sw;
            const uint32_t key = channel << w.tap_bits | static_cast<uint32_t>(ky * a.kw + kx);
            for (int64_t o = group * out_per_group; o < (group + 1) * out_per_group; ++o) {
              float& out = y[o * plane_out + q];
              if (std::isnan(out)) continue;  // already NaN (mostly so when many inputs are)
              // Taps are sorted by key within an output channel.
              const uint32_t* first = w.key.data() + w.ptr[static_cast<size_t>(o)];
              const uint32_t* last = w.key.data() + w.ptr[static_cast<size_t>(o) + 1];
              if (!std::binary_search(first, last, key)) out = kNaN;
            }
          }
        }
      }
}

}  // namespace dc_onnx
