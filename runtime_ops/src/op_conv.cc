// CompressedConv: ONNX Conv (1-D, 2-D) computed from the non-zero kernel taps only:
// each tap adds value * (the input shifted by the tap's offset) to the output plane, so
// the work is proportional to the non-zeros and no im2col buffer is built.
//
// Strides become stride 1 by splitting the padded input into stride_h * stride_w phase
// planes (phase (a, b) holds rows a, a + sh, ... and columns b, b + sw, ...): tap
// (c, ky, kx) reads phase ((ky*dh) % sh, (kx*dw) % sw) of channel c shifted by
// ((ky*dh) / sh, (kx*dw) / sw). With phase rows laid out at a fixed width, every tap is
// then one shift of the whole flattened plane, computed 128 outputs at a time with the
// sums in registers (panel.h). Parallel over output channels, one image at a time.
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

// Everything the per-channel jobs need for one image.
struct Plan {
  const float* x;          // phase planes of the image (first of the shifted copies)
  int64_t channel_stride;  // floats between the phase planes of consecutive channels
  int64_t row_width;       // floats per phase-plane row (a multiple of 16)
  int64_t out_h, out_w;
  int64_t out_per_group, in_per_group;
  const size_t* tap_ptr;
  const uint8_t* codes;
  const uint32_t* keys;
  unsigned tap_bits;
  const float* codebook;
  const int64_t* tap_offset;  // offset of tap r = ky*kw + kx from its channel's planes
  const float* bias;
  float* y;
};

// Output channel o of one image: output position q = oh * row_width + ow reads
// x[channel * channel_stride + tap_offset[r] + q]. Positions with ow >= out_w are
// computed and dropped.
DC_ONNX_HOT void plane_flat(const Plan& p, int64_t o) {
  const int64_t len = (p.out_h - 1) * p.row_width + p.out_w;
  float* yp = p.y + o * p.out_h * p.out_w;
  const float* xg = p.x + (o / p.out_per_group) * p.in_per_group * p.channel_stride;
  const uint32_t* keys = p.keys;
  const int64_t* tap_offset = p.tap_offset;
  const int64_t channel_stride = p.channel_stride;
  const unsigned bits = p.tap_bits;
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  auto offset = [&](size_t j) {
    const uint32_t key = keys[j];
    return static_cast<int64_t>(key >> bits) * channel_stride + tap_offset[key & mask];
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
      if (++col == p.row_width) {
        col = 0;
        ++row;
      }
    }
  }
}

// Geometry of the phase planes for one Run.
struct Phases {
  int64_t sh, sw;         // strides = phases per axis
  int64_t hp, wp;         // rows and used columns of a phase plane
  int64_t row_width;      // wp rounded up to 16
  int64_t plane;          // hp * row_width
  int64_t copy_len;       // one shifted copy: channels * sh * sw planes + 16 floats slack
  int64_t copies;         // distinct column shifts (kx*dw) / sw, hence shifted copies
};

// Phase plane (c, a, b)[h, w] = input[c, h*sh + a - pad_top, w*sw + b - pad_left], zero
// outside the input; written for channels [0, channels) of one image into `out`.
void build_phases(const float* x, int64_t channels, int64_t in_h, int64_t in_w, int64_t pad_top,
                  int64_t pad_left, const Phases& ph, float* out) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t a = 0; a < ph.sh; ++a)
      for (int64_t b = 0; b < ph.sw; ++b) {
        float* plane = out + ((c * ph.sh + a) * ph.sw + b) * ph.plane;
        for (int64_t h = 0; h < ph.hp; ++h) {
          float* row = plane + h * ph.row_width;
          const int64_t i = h * ph.sh + a - pad_top;
          if (i < 0 || i >= in_h) {
            std::fill(row, row + ph.wp, 0.0f);
            continue;
          }
          const float* xr = x + (c * in_h + i) * in_w;
          for (int64_t w = 0; w < ph.wp; ++w) {
            const int64_t j = w * ph.sw + b - pad_left;
            row[w] = j >= 0 && j < in_w ? xr[j] : 0.0f;
          }
        }
      }
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

    Phases ph{};
    ph.sh = sh_;
    ph.sw = sw_;
    ph.hp = out_h + (kh_ - 1) * dh_ / sh_;
    ph.wp = out_w + (kw_ - 1) * dw_ / sw_;
    ph.row_width = (ph.wp + 15) / 16 * 16;
    ph.plane = ph.hp * ph.row_width;
    ph.copy_len = channels * sh_ * sw_ * ph.plane + 16;
    ph.copies = (kw_ - 1) * dw_ / sw_ + 1;
    // Copy s is the phase planes shifted left by s floats. With row_width a multiple of
    // 16, tap (c, ky, kx) then starts 64-byte aligned in copy (kx*dw) / sw, so no panel
    // load splits a cache line; 16 floats of slack cover the last panel's reads.
    std::vector<float> buffer(static_cast<size_t>(ph.copies * ph.copy_len + 16), 0.0f);
    float* copies = buffer.data();
    while (reinterpret_cast<uintptr_t>(copies) % 64 != 0) ++copies;
    std::vector<int64_t> tap_offset(size_t{1} << tap_bits_, 0);
    for (int64_t r = 0; r < kh_ * kw_; ++r) {
      const int64_t ty = (r / kw_) * dh_, tx = (r % kw_) * dw_;
      const int64_t phase = (ty % sh_) * sw_ + tx % sw_;
      tap_offset[static_cast<size_t>(r)] =
          (tx / sw_) * ph.copy_len + phase * ph.plane + (ty / sh_) * ph.row_width;
    }
    Plan plan{copies, sh_ * sw_ * ph.plane, ph.row_width, out_h, out_w, out_channels_ / group_,
              in_per_group_, tap_ptr_.data(), codes_.data(), keys_.data(), tap_bits_,
              codebook_.data(), tap_offset.data(), bias, y};
    const double taps_avg =
        static_cast<double>(codes_.size()) / static_cast<double>(out_channels_) + 1.0;
    size_t tasks = task_count(out_channels_, taps_avg * static_cast<double>(out_h * out_w));
    const int64_t chunk =
        (out_channels_ + static_cast<int64_t>(tasks) - 1) / static_cast<int64_t>(tasks);
    tasks = static_cast<size_t>((out_channels_ + chunk - 1) / chunk);
    const int64_t image_in = channels * in_h * in_w;
    const int64_t image_out = out_channels_ * out_h * out_w;
    for (int64_t n = 0; n < batch; ++n) {
      build_phases(x.data + n * image_in, channels, in_h, in_w, pad_top, pad_left, ph, copies);
      for (int64_t s = 1; s < ph.copies; ++s)  // the last s floats of copy s stay zero
        std::copy(copies + s, copies + ph.copy_len, copies + s * ph.copy_len);
      plan.y = y + n * image_out;
      parallel_for(ctx, tasks, [&](size_t t) {
        const int64_t o1 = std::min(out_channels_, (static_cast<int64_t>(t) + 1) * chunk);
        for (int64_t o = static_cast<int64_t>(t) * chunk; o < o1; ++o) plane_flat(plan, o);
      });
    }
  });
}

}  // namespace dc_onnx
