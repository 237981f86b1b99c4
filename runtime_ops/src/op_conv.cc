// CompressedConv: ONNX Conv (1-D, 2-D) computed from the non-zero kernel taps only:
// each tap adds value * (the input shifted by the tap's offset) to the output plane, so
// the work is proportional to the non-zeros and no im2col buffer is built. Stride 1 (the
// common case) runs over a zero-padded copy of the input where every tap is one shift
// of the whole flattened plane, 64 outputs at a time with the sums in registers
// (panel.h); other strides go row by row. Parallel over (image, output channel) planes.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernel_info.h"
#include "ops.h"
#include "panel.h"
#include "parallel.h"
#include "simd.h"

namespace dc_onnx {
namespace {

std::vector<int64_t> ints_or(const OrtKernelInfo* info, const char* name, size_t size,
                             int64_t fill_value) {
  auto v = attr_ints(info, name);
  if (!v) return std::vector<int64_t>(size, fill_value);
  if (v->size() != size)
    fail(std::string("attribute '") + name + "' must have " + std::to_string(size) + " values");
  return *v;
}

// Output length and leading pad along one axis (ONNX Conv / ORT rules for auto_pad).
int64_t output_size(const std::string& auto_pad, int64_t in, int64_t k, int64_t stride,
                    int64_t dilation, int64_t pad_begin, int64_t pad_end, int64_t* pad_used) {
  const int64_t span = dilation * (k - 1) + 1;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    // As ORT: the total pad may be negative (stride > kernel crops the input), and the
    // head pad rounds toward zero. ORT itself refuses dilations here; we use the span.
    const int64_t out = (in + stride - 1) / stride;
    const int64_t total = (out - 1) * stride + span - in;
    *pad_used = auto_pad == "SAME_UPPER" ? total / 2 : (total + 1) / 2;
    return out;
  }
  if (auto_pad == "VALID") pad_begin = pad_end = 0;
  *pad_used = pad_begin;
  const int64_t padded = in + pad_begin + pad_end;
  if (padded < span)
    fail_input("input length " + std::to_string(in) + " (padded " + std::to_string(padded) +
               ") is shorter than the dilated kernel (" + std::to_string(span) + ")");
  return (padded - span) / stride + 1;
}

// Output positions o in [0, out) whose input position o * stride + offset lies in [0, in).
void valid_range(int64_t offset, int64_t stride, int64_t in, int64_t out, int64_t* lo,
                 int64_t* hi) {
  *lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  *hi = in - 1 - offset < 0 ? 0 : std::min(out, (in - 1 - offset) / stride + 1);
}

// Everything the per-plane jobs need for one Run.
struct Plan {
  const float* x;  // input, or its zero-padded copy (then pad_top = pad_left = 0)
  int64_t channels, in_h, in_w;
  int64_t out_h, out_w, pad_top, pad_left;
  int64_t sh, sw, dh, dw;
  int64_t out_channels, out_per_group, in_per_group;
  int64_t kw;
  const size_t* tap_ptr;
  const uint8_t* codes;
  const uint32_t* keys;
  unsigned tap_bits;
  const float* codebook;
  const int64_t* tap_offset;  // flat path: offset in the padded plane of tap r = ky*kw + kx
  const float* bias;
  float* y;
};

// General path, any stride and padding: per tap, one shifted axpy per output row.
DC_ONNX_HOT void plane_by_rows(const Plan& p, int64_t job) {
  const int64_t n = job / p.out_channels;
  const int64_t o = job % p.out_channels;
  const int64_t plane_in = p.in_h * p.in_w;
  const int64_t plane_out = p.out_h * p.out_w;
  float* yp = p.y + job * plane_out;
  std::fill(yp, yp + plane_out, 0.0f);
  const float* xg = p.x + (n * p.channels + (o / p.out_per_group) * p.in_per_group) * plane_in;
  const uint32_t tap_mask = (uint32_t{1} << p.tap_bits) - 1;
  for (size_t i = p.tap_ptr[o]; i < p.tap_ptr[o + 1]; ++i) {
    const uint32_t key = p.keys[i];
    const int64_t r = key & tap_mask;
    const int64_t off_h = (r / p.kw) * p.dh - p.pad_top;
    const int64_t off_w = (r % p.kw) * p.dw - p.pad_left;
    int64_t h0, h1, w0, w1;
    valid_range(off_h, p.sh, p.in_h, p.out_h, &h0, &h1);
    valid_range(off_w, p.sw, p.in_w, p.out_w, &w0, &w1);
    if (w0 >= w1) continue;
    const float v = p.codebook[p.codes[i]];
    const float* xc = xg + static_cast<int64_t>(key >> p.tap_bits) * plane_in;
    const int64_t len = w1 - w0;
    for (int64_t oh = h0; oh < h1; ++oh) {
      float* yr = yp + oh * p.out_w + w0;
      const float* xr = xc + (oh * p.sh + off_h) * p.in_w + (w0 * p.sw + off_w);
      if (p.sw == 1) {
        for (int64_t q = 0; q < len; ++q) yr[q] += v * xr[q];
      } else {
        for (int64_t q = 0; q < len; ++q) yr[q] += v * xr[q * p.sw];
      }
    }
  }
  if (p.bias != nullptr)
    for (int64_t q = 0; q < plane_out; ++q) yp[q] += p.bias[o];
}

// Stride 1 over a padded input of width in_w: output (oh, ow) reads input
// (oh + ky*dh, ow + kx*dw), so with rows kept at the input's width, output position
// q = oh * in_w + ow reads input q + tap_offset[r] (see compute for the shifted copies
// this offset points into). Positions with ow >= out_w are computed and dropped.
DC_ONNX_HOT void plane_flat(const Plan& p, int64_t job) {
  const int64_t n = job / p.out_channels;
  const int64_t o = job % p.out_channels;
  const int64_t plane_in = p.in_h * p.in_w;
  const int64_t len = (p.out_h - 1) * p.in_w + p.out_w;  // stays inside the input plane
  float* yp = p.y + job * p.out_h * p.out_w;
  const float* xg = p.x + (n * p.channels + (o / p.out_per_group) * p.in_per_group) * plane_in;
  const uint32_t* keys = p.keys;
  const int64_t* tap_offset = p.tap_offset;
  const unsigned bits = p.tap_bits;
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  auto offset = [&](size_t j) {
    const uint32_t key = keys[j];
    return static_cast<int64_t>(key >> bits) * plane_in + tap_offset[key & mask];
  };
  const float bias = p.bias != nullptr ? p.bias[o] : 0.0f;
  constexpr auto kWidest = static_cast<int64_t>(16 * kMaxV);
  alignas(64) float acc[kWidest];
  int64_t row = 0, col = 0;  // (oh, ow) of the next position q
  for (int64_t q0 = 0; q0 < len; q0 += kWidest) {
    const int64_t width = std::min(kWidest, len - q0);
    sparse_panel_any(width, p.codes, p.tap_ptr[o], p.tap_ptr[o + 1], p.codebook, xg + q0,
                        offset, acc);
    for (int64_t i = 0; i < width; ++i) {
      if (col < p.out_w) yp[row * p.out_w + col] = p.bias != nullptr ? acc[i] + bias : acc[i];
      if (++col == p.in_w) {
        col = 0;
        ++row;
      }
    }
  }
}

// Copies x [planes, h, w] into out [planes, hp, wp] at (top, left), zeros around.
void pad_planes(const float* x, int64_t planes, int64_t h, int64_t w, int64_t top, int64_t left,
                int64_t hp, int64_t wp, float* out) {
  for (int64_t c = 0; c < planes; ++c)
    for (int64_t r = 0; r < h; ++r)
      std::copy(x + (c * h + r) * w, x + (c * h + r + 1) * w, out + (c * hp + r + top) * wp + left);
}


}  // namespace

ConvKernel::ConvKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    const std::vector<int64_t> shape = required_ints(info, "weight_shape");
    check_weight_shape(shape, {3, 4});
    one_d_ = shape.size() == 3;
    const size_t spatial = shape.size() - 2;
    out_channels_ = shape[0];
    in_per_group_ = shape[1];
    kh_ = one_d_ ? 1 : shape[2];
    kw_ = shape.back();

    group_ = attr_int(info, "group").value_or(1);
    if (group_ < 1 || out_channels_ % group_ != 0)
      fail("group " + std::to_string(group_) + " does not divide the " +
           std::to_string(out_channels_) + " output channels");
    if (auto ks = attr_ints(info, "kernel_shape");
        ks && !std::equal(ks->begin(), ks->end(), shape.begin() + 2, shape.end()))
      fail("kernel_shape " + shape_str(*ks) + " disagrees with weight_shape " + shape_str(shape));
    const std::vector<int64_t> strides = ints_or(info, "strides", spatial, 1);
    const std::vector<int64_t> dilations = ints_or(info, "dilations", spatial, 1);
    const std::vector<int64_t> pads = ints_or(info, "pads", 2 * spatial, 0);
    for (int64_t v : strides) if (v < 1) fail("strides must be >= 1");
    for (int64_t v : dilations) if (v < 1) fail("dilations must be >= 1");
    for (int64_t v : pads) if (v < 0) fail("pads must be >= 0");
    auto_pad_ = attr_string(info, "auto_pad").value_or("NOTSET");
    if (auto_pad_ != "NOTSET" && auto_pad_ != "VALID" && auto_pad_ != "SAME_UPPER" &&
        auto_pad_ != "SAME_LOWER")
      fail("unknown auto_pad '" + auto_pad_ + "'");
    if (one_d_) {
      sw_ = strides[0];
      dw_ = dilations[0];
      pads_[1] = pads[0];
      pads_[3] = pads[1];
    } else {
      sh_ = strides[0];
      sw_ = strides[1];
      dh_ = dilations[0];
      dw_ = dilations[1];
      std::copy(pads.begin(), pads.end(), pads_);
    }

    const int64_t taps_per_channel = kh_ * kw_;  // dims <= 2^31-1: no overflow here
    if (taps_per_channel > INT32_MAX / in_per_group_)
      fail("weight_shape " + shape_str(shape) + " is too large");
    const CsrMatrix w =
        load_compressed_weight(info, out_channels_, in_per_group_ * taps_per_channel);
    while ((int64_t{1} << tap_bits_) < taps_per_channel) ++tap_bits_;
    // channel < in_per_group and 2^tap_bits < 2 * taps, so keys stay below 2^32.
    tap_ptr_ = w.row_ptr;
    codes_ = w.code;
    codebook_ = w.codebook;
    keys_.reserve(w.col.size());
    for (const uint32_t c : w.col) {
      const auto channel = static_cast<uint32_t>(c / static_cast<uint64_t>(taps_per_channel));
      const auto r = static_cast<uint32_t>(c % static_cast<uint64_t>(taps_per_channel));
      keys_.push_back(channel << tap_bits_ | r);
    }
  });
}

void ConvKernel::compute(OrtKernelContext* context) const {
  with_layer(prefix_, [&] {
    const Ort::KernelContext ctx(context);
    const InputTensor x = float_input(ctx, 0);
    const size_t want_rank = one_d_ ? 3 : 4;
    if (x.shape.size() != want_rank)
      fail_input("X must have rank " + std::to_string(want_rank) + ", got shape " +
                 shape_str(x.shape));
    const int64_t batch = x.shape[0];
    const int64_t channels = x.shape[1];
    if (channels != in_per_group_ * group_)
      fail_input("X of shape " + shape_str(x.shape) + " has " + std::to_string(channels) +
                 " channels, the weight expects " + std::to_string(in_per_group_ * group_));
    const int64_t in_h = one_d_ ? 1 : x.shape[2];
    const int64_t in_w = x.shape.back();
    int64_t pad_top = 0, pad_left = 0;
    const int64_t out_h = one_d_ ? 1 : output_size(auto_pad_, in_h, kh_, sh_, dh_, pads_[0],
                                                   pads_[2], &pad_top);
    const int64_t out_w = output_size(auto_pad_, in_w, kw_, sw_, dw_, pads_[1], pads_[3],
                                      &pad_left);

    const float* bias = nullptr;
    if (ctx.GetInputCount() > 6 && ctx.GetInput(6) != nullptr) {
      const InputTensor b = float_input(ctx, 6);
      if (b.shape.size() != 1 || b.shape[0] != out_channels_)
        fail_input("bias B of shape " + shape_str(b.shape) + " must be [" +
                   std::to_string(out_channels_) + "]");
      bias = b.data;
    }
    std::vector<int64_t> y_shape = {batch, out_channels_, out_h, out_w};
    if (one_d_) y_shape.erase(y_shape.begin() + 2);
    float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
    if (batch * out_channels_ == 0 || out_h * out_w == 0) return;

    Plan plan{x.data, channels, in_h, in_w, out_h, out_w, pad_top, pad_left, sh_, sw_, dh_, dw_,
              out_channels_, out_channels_ / group_, in_per_group_, kw_, tap_ptr_.data(),
              codes_.data(), keys_.data(), tap_bits_, codebook_.data(), nullptr, bias, y};
    // The flat path needs stride 1 and non-negative pads on all four sides.
    const int64_t hp = out_h + dh_ * (kh_ - 1);
    const int64_t wp = out_w + dw_ * (kw_ - 1);
    const bool flat = sh_ == 1 && sw_ == 1 && pad_top >= 0 && pad_left >= 0 &&
                      hp >= in_h + pad_top && wp >= in_w + pad_left;
    const double taps_avg =
        static_cast<double>(codes_.size()) / static_cast<double>(out_channels_) + 1.0;
    const double plane_work = taps_avg * static_cast<double>(out_h * out_w);
    auto run_jobs = [&](int64_t jobs, auto&& job_fn) {  // (image, channel) planes in chunks
      size_t tasks = task_count(jobs, plane_work);
      const int64_t chunk = (jobs + static_cast<int64_t>(tasks) - 1) / static_cast<int64_t>(tasks);
      tasks = static_cast<size_t>((jobs + chunk - 1) / chunk);
      parallel_for(ctx, tasks, [&](size_t t) {
        const int64_t j1 = std::min(jobs, (static_cast<int64_t>(t) + 1) * chunk);
        for (int64_t job = static_cast<int64_t>(t) * chunk; job < j1; ++job) job_fn(job);
      });
    };
    if (!flat) {
      run_jobs(batch * out_channels_, [&](int64_t job) { plane_by_rows(plan, job); });
      return;
    }
    // Flat path, one image at a time (bounds the buffer): kw copies of the zero-padded
    // image, copy kx shifted left by kx * dw. With rows padded to a multiple of 16 floats,
    // tap (c, ky, kx) then starts on a 64-byte boundary in copy kx, so no panel load splits
    // a cache line. 16 floats of slack per copy cover the last panel's reads.
    const int64_t wpa = (wp + 15) / 16 * 16;
    const int64_t plane = hp * wpa;
    const int64_t copy_len = channels * plane + 16;
    std::vector<float> buffer(static_cast<size_t>(kw_ * copy_len + 16), 0.0f);
    float* copies = buffer.data();
    while (reinterpret_cast<uintptr_t>(copies) % 64 != 0) ++copies;
    std::vector<int64_t> tap_offset(size_t{1} << tap_bits_, 0);
    for (int64_t r = 0; r < kh_ * kw_; ++r)
      tap_offset[static_cast<size_t>(r)] = (r % kw_) * copy_len + (r / kw_) * dh_ * wpa;
    plan.x = copies;
    plan.in_h = hp;
    plan.in_w = wpa;
    plan.pad_top = plan.pad_left = 0;
    plan.tap_offset = tap_offset.data();
    const int64_t image_in = channels * in_h * in_w;
    const int64_t image_out = out_channels_ * out_h * out_w;
    for (int64_t n = 0; n < batch; ++n) {
      // Padding cells stay zero from the allocation; only the interior is rewritten.
      pad_planes(x.data + n * image_in, channels, in_h, in_w, pad_top, pad_left, hp, wpa, copies);
      for (int64_t kx = 1; kx < kw_; ++kx)
        std::copy(copies + kx * dw_, copies + copy_len, copies + kx * copy_len);
      plan.y = y + n * image_out;
      run_jobs(out_channels_, [&](int64_t job) { plane_flat(plan, job); });
    }
  });
}

}  // namespace dc_onnx
