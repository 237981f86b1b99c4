// CompressedConv: ONNX Conv (1-D, 2-D) computed from the non-zero kernel taps only:
// each tap adds value * (the input shifted by the tap's offset) to the output plane, so
// the work is proportional to the non-zeros and no im2col buffer is built.
//
// Strides become stride 1 by splitting the padded input into stride_h * stride_w phase
// planes (phase (a, b) holds rows a, a + sh, ... and columns b, b + sw, ...): tap
// (c, ky, kx) reads phase ((ky*dh) % sh, (kx*dw) % sw) of channel c shifted by
// ((ky*dh) / sh, (kx*dw) / sw). With phase rows laid out at a fixed width, every tap is
// then one shift of the whole flattened plane, computed 128 outputs at a time with the
// sums in registers (panel.h), input channels in blocks that stay in L1 while a range of
// output channels uses them. Parallel over output-channel ranges, one image at a time.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
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
  int64_t num_blocks;         // input-channel blocks
  const size_t* block_ptr;    // per output channel, num_blocks + 1 tap offsets
  const uint8_t* codes;
  const uint32_t* keys;
  unsigned tap_bits;
  const float* codebook;
  const int64_t* tap_offset;  // offset of tap r = ky*kw + kx from its channel's planes
  float* sums;                // per output channel, `len_pad` flat partial sums
  int64_t len_pad;
};

constexpr auto kWidest = static_cast<int64_t>(16 * kMaxV);

// Output channels [o0, o1) of one image into plan.sums: output position
// q = oh * row_width + ow sums x[channel * channel_stride + tap_offset[r] + q] over the
// taps. Loop order panel > input-channel block > output channel, so the block of input
// a panel reads stays in L1 while every output channel of the range uses it.
DC_ONNX_HOT void channels_task(const Plan& p, int64_t o0, int64_t o1) {
  const int64_t len = (p.out_h - 1) * p.row_width + p.out_w;
  const uint32_t* keys = p.keys;
  const int64_t* tap_offset = p.tap_offset;
  const int64_t channel_stride = p.channel_stride;
  const unsigned bits = p.tap_bits;
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  auto offset = [&](size_t j) {
    const uint32_t key = keys[j];
    return static_cast<int64_t>(key >> bits) * channel_stride + tap_offset[key & mask];
  };
  const auto nb = static_cast<size_t>(p.num_blocks);
  for (int64_t q0 = 0; q0 < len; q0 += kWidest) {
    const int64_t width = std::min(kWidest, len - q0);
    for (size_t blk = 0; blk < nb; ++blk)
      for (int64_t o = o0; o < o1; ++o) {
        const size_t* ptr = p.block_ptr + static_cast<size_t>(o) * (nb + 1) + blk;
        if (blk > 0 && ptr[0] == ptr[1]) continue;  // nothing to add
        const float* xg = p.x + (o / p.out_per_group) * p.in_per_group * channel_stride + q0;
        float* out = p.sums + o * p.len_pad + q0;
        sparse_panel_any(width, p.codes, ptr[0], ptr[1], p.codebook, xg, offset,
                         blk > 0 ? out : nullptr, out);
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
    const int64_t cols = in_per_group_ * taps_per_channel;
    const CsrMatrix w = load_compressed_weight(info, out_channels_, cols);
    const double density =
        static_cast<double>(w.code.size()) / static_cast<double>(out_channels_ * cols);
    if (density >= kDenseConvDensity && (auto_pad_ == "NOTSET" || auto_pad_ == "VALID")) {
      std::vector<float> dense(static_cast<size_t>(out_channels_ * cols), 0.0f);
      for (size_t r = 0; r < static_cast<size_t>(out_channels_); ++r)
        for (size_t j = w.row_ptr[r]; j < w.row_ptr[r + 1]; ++j)
          dense[r * static_cast<size_t>(cols) + w.col[j]] = w.codebook[w.code[j]];
      ConvAttributes a;
      a.group = group_;
      a.auto_pad = auto_pad_;
      if (one_d_) {
        a.kernel_shape = {kw_};
        a.strides = {sw_};
        a.dilations = {dw_};
        a.pads = {pads_[1], pads_[3]};
      } else {
        a.kernel_shape = {kh_, kw_};
        a.strides = {sh_, sw_};
        a.dilations = {dh_, dw_};
        a.pads = {pads_[0], pads_[1], pads_[2], pads_[3]};
      }
      size_t inputs = 0;
      Ort::ThrowOnError(Ort::GetApi().KernelInfo_GetInputCount(info, &inputs));
      dense_ = std::make_unique<DenseConv>(info, std::move(dense), shape, a, inputs > 6);
      return;
    }
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
    Ort::UnownedValue y_value = ctx.GetOutput(0, y_shape);
    float* y = y_value.GetTensorMutableData<float>();
    if (batch * out_channels_ == 0 || out_h * out_w == 0) return;
    if (dense_) {
      const OrtValue* b = bias != nullptr ? static_cast<const OrtValue*>(ctx.GetInput(6)) : nullptr;
      dense_->run(ctx, ctx.GetInput(0), b, y_value);
      return;
    }

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
    // Input-channel blocks small enough that what one panel reads from a block (every
    // shifted copy and phase, the panel plus the rows its taps reach) fits in ~24 KiB.
    const int64_t rows_reached = (kh_ - 1) * dh_ / sh_;
    const int64_t per_channel_bytes =
        ph.copies * sh_ * sw_ * (kWidest + rows_reached * ph.row_width) * 4;
    const int64_t block = std::clamp<int64_t>(24576 / per_channel_bytes, 1, in_per_group_);
    const int64_t num_blocks = (in_per_group_ + block - 1) / block;
    // Taps are sorted by key, hence by input channel: block starts by binary search.
    std::vector<size_t> block_ptr(static_cast<size_t>(out_channels_ * (num_blocks + 1)));
    for (int64_t o = 0; o < out_channels_; ++o) {
      const uint32_t* first = keys_.data() + tap_ptr_[static_cast<size_t>(o)];
      const uint32_t* last = keys_.data() + tap_ptr_[static_cast<size_t>(o) + 1];
      size_t* ptr = block_ptr.data() + o * (num_blocks + 1);
      for (int64_t k = 0; k <= num_blocks; ++k) {
        const auto channel = static_cast<uint32_t>(std::min(k * block, in_per_group_));
        ptr[k] = static_cast<size_t>(std::lower_bound(first, last, channel << tap_bits_) -
                                     keys_.data());
      }
    }
    const int64_t len = (out_h - 1) * ph.row_width + out_w;
    const int64_t len_pad = (len + kWidest - 1) / kWidest * kWidest;
    std::vector<float> sums(static_cast<size_t>(out_channels_ * len_pad));
    Plan plan{copies, sh_ * sw_ * ph.plane, ph.row_width, out_h, out_w, out_channels_ / group_,
              in_per_group_, num_blocks, block_ptr.data(), codes_.data(), keys_.data(),
              tap_bits_, codebook_.data(), tap_offset.data(), sums.data(), len_pad};
    // Ranges of output channels share each loaded block, and each range reads the whole
    // image once: few ranges (4, of 4 channels or more) keep that traffic low.
    const int64_t chunk = std::max<int64_t>(4, (out_channels_ + 3) / 4);
    const auto tasks = static_cast<size_t>((out_channels_ + chunk - 1) / chunk);
    const int64_t image_in = channels * in_h * in_w;
    const int64_t plane_out = out_h * out_w;
    for (int64_t n = 0; n < batch; ++n) {
      build_phases(x.data + n * image_in, channels, in_h, in_w, pad_top, pad_left, ph, copies);
      for (int64_t s = 1; s < ph.copies; ++s)  // the last s floats of copy s stay zero
        std::copy(copies + s, copies + ph.copy_len, copies + s * ph.copy_len);
      float* yn = y + n * out_channels_ * plane_out;
      parallel_for(ctx, tasks, [&](size_t t) {
        const int64_t o0 = static_cast<int64_t>(t) * chunk;
        const int64_t o1 = std::min(out_channels_, o0 + chunk);
        channels_task(plan, o0, o1);
        // Keep the columns ow < out_w of each flat row, then add the bias.
        for (int64_t o = o0; o < o1; ++o) {
          const float* src = sums.data() + o * len_pad;
          float* dst = yn + o * plane_out;
          for (int64_t oh = 0; oh < out_h; ++oh)
            for (int64_t ow = 0; ow < out_w; ++ow)
              dst[oh * out_w + ow] = bias != nullptr ? src[oh * ph.row_width + ow] + bias[o]
                                                     : src[oh * ph.row_width + ow];
        }
      });
    }
  });
}

}  // namespace dc_onnx
