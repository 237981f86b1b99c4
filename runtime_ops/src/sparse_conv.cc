// CompressedConv's loops (sparse_conv.h). Strides become stride 1 by splitting the padded
// input into stride_h * stride_w phase planes (phase (a, b) holds rows a, a + sh, ... and
// columns b, b + sw, ...): tap (c, ky, kx) reads phase ((ky*dh) % sh, (kx*dw) % sw) of
// channel c shifted by ((ky*dh) / sh, (kx*dw) / sw). With phase rows laid out at a fixed
// width, every tap is then one shift of the whole flattened plane, computed 112-128
// outputs at a time with the sums in registers (panel.h), input channels in blocks that
// stay in L1 while a range of output channels uses them. Each output is one chain
// (((0 + w_1*x_1) + w_2*x_2) + ...) over its non-zeros in key order (input channel, ky,
// kx), each product and sum rounded to float32: the same bits whatever the ISA, panel,
// block, band or thread count. Parallel over output-channel ranges, one image at a time, and within
// an image one band of output rows at a time: the planes of a band and its sums fit
// kConvScratchBytes (sparse_conv.h), whatever the image size.
#include "sparse_conv.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "checked.h"
#include "non_finite.h"
#include "panel.h"
#include "parallel.h"
#include "scratch.h"
#include "simd.h"

namespace dc_onnx {
namespace {

// Everything the per-channel jobs need for one image. `Key` is the tap keys' type
// (ConvTaps: uint16_t or uint32_t).
template <typename Key>
struct Plan {
  const float* x;          // phase planes of the image (first of the shifted copies)
  int64_t channel_stride;  // floats between the phase planes of consecutive channels
  int64_t row_width;       // floats per phase-plane row (a multiple of 16)
  int64_t out_h, out_w;
  int64_t out_per_group, in_per_group;
  int64_t num_blocks;         // input-channel blocks
  const size_t* block_ptr;    // per output channel, num_blocks + 1 tap offsets
  const uint8_t* codes;
  const Key* keys;
  unsigned tap_bits;
  const float* codebook;
  const int64_t* tap_offset;  // offset of tap r = ky*kw + kx from its channel's planes
  float* sums;                // per output channel, `len_pad` flat partial sums
  int64_t len_pad;
  int64_t y_plane;            // floats between output channels of Y (the image's out_h * out_w)
};

constexpr auto kWidest = static_cast<int64_t>(16 * kMaxV);

// Output channels [o0, o1) of one image into plan.sums: output position
// q = oh * row_width + ow sums x[channel * channel_stride + tap_offset[r] + q] over the
// taps. Loop order panel > input-channel block > output channel, so the block of input
// a panel reads stays in L1 while every output channel of the range uses it. `Vec` is the
// register type of the calling ISA (panel.h); the bits do not depend on it.
template <typename Vec, int64_t Width, size_t Acc, typename Key>
DC_ONNX_INLINE void channels_task(const Plan<Key>& p, int64_t o0, int64_t o1) {
  const int64_t len = (p.out_h - 1) * p.row_width + p.out_w;
  const Key* keys = p.keys;
  const int64_t* tap_offset = p.tap_offset;
  const int64_t channel_stride = p.channel_stride;
  const unsigned bits = p.tap_bits;
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  auto offset = [&](size_t j) {
    const uint32_t key = keys[j];  // widened: the shift and mask below are 32-bit
    return static_cast<int64_t>(key >> bits) * channel_stride + tap_offset[key & mask];
  };
  const auto nb = static_cast<size_t>(p.num_blocks);
  for (int64_t q0 = 0; q0 < len; q0 += Width) {
    const int64_t width = std::min(Width, len - q0);
    for (size_t blk = 0; blk < nb; ++blk)
      for (int64_t o = o0; o < o1; ++o) {
        const size_t* ptr = p.block_ptr + static_cast<size_t>(o) * (nb + 1) + blk;
        if (blk > 0 && ptr[0] == ptr[1]) continue;  // nothing to add
        const float* xg = p.x + (o / p.out_per_group) * p.in_per_group * channel_stride + q0;
        float* out = p.sums + o * p.len_pad + q0;
        sparse_panel_any<Vec, /*Chain=*/true, Acc>(width, p.codes, ptr[0], ptr[1], p.codebook,
                                                   xg, offset, blk > 0 ? out : nullptr, out);
      }
  }
}

// One copy of the loop per ISA (simd.h): 16 zmm, 8 ymm or 4 xmm floats per register, and
// the panel width and accumulator count for that ISA's register file. Each output is one
// chain over its non-zeros in key order (panel.h, Chain), so none of these choices
// changes the bits. AVX2: 112 outputs = 14 ymm accumulators in one chunk, plus the
// broadcast weight and one product (the input is read straight from memory), so each key
// is decoded once per 112 outputs instead of once per 64 (two 8-register chunks of a
// 128-wide panel).
// AVX-512 keeps its 8 zmm (128 outputs), as measured on the AVX-512 machine.
#ifdef DC_ONNX_X86
template <typename Key>
DC_ONNX_TARGET_AVX512 void channels_avx512(const Plan<Key>& p, int64_t o0, int64_t o1) {
  channels_task<Vec16, 128, 8>(p, o0, o1);
}
template <typename Key>
DC_ONNX_TARGET_AVX2 void channels_avx2(const Plan<Key>& p, int64_t o0, int64_t o1) {
  channels_task<Vec8, 112, 14>(p, o0, o1);
}
#endif
template <typename Key>
void channels_baseline(const Plan<Key>& p, int64_t o0, int64_t o1) {
  channels_task<Vec4, 128, 8>(p, o0, o1);
}

template <typename Key>
using ChannelsFn = void (*)(const Plan<Key>&, int64_t, int64_t);

template <typename Key>
ChannelsFn<Key> channels_for(Isa which) {
#ifdef DC_ONNX_X86
  if (which == Isa::kAvx512) return channels_avx512<Key>;
  if (which == Isa::kAvx2) return channels_avx2<Key>;
#endif
  (void)which;
  return channels_baseline<Key>;
}

// Geometry of the phase planes for one Run.
struct Phases {
  int64_t sh, sw;         // strides = phases per axis
  int64_t hp, wp;         // rows and used columns of a phase plane
  int64_t row_width;      // wp rounded up to 16
  int64_t plane;          // hp * row_width
  int64_t copy_len;       // one copy: channels * sh * sw planes + slack for the last reads
  int64_t copies;         // distinct column shifts (kx*dw) / sw: what the plan is sized for
  int64_t stored;         // shifted copies in memory: `copies`, or 1 (below)
};

// Phase plane (c, a, b)[h, w] = input[c, h*sh + a - pad_top, w*sw + b - pad_left], zero
// outside the input and in the columns [wp, row_width) that round each row up (read only
// for outputs that are dropped, but scratch memory holds anything: keep it finite);
// written for channels [0, channels) of one image (or band of rows) into `out`.
void build_phases(const float* x, int64_t channels, int64_t in_h, int64_t in_w, int64_t pad_top,
                  int64_t pad_left, const Phases& ph, float* out) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t a = 0; a < ph.sh; ++a)
      for (int64_t b = 0; b < ph.sw; ++b) {
        float* plane = out + ((c * ph.sh + a) * ph.sw + b) * ph.plane;
        for (int64_t h = 0; h < ph.hp; ++h) {
          float* row = plane + h * ph.row_width;
          const int64_t i = h * ph.sh + a - pad_top;
          std::fill(row + ph.wp, row + ph.row_width, 0.0f);
          if (i < 0 || i >= in_h) {
            std::fill(row, row + ph.wp, 0.0f);
            continue;
          }
          const float* xr = x + (c * in_h + i) * in_w;
          // Columns w with 0 <= j = w*sw + b - pad_left < in_w are [w0, w1): zeros
          // around a strided copy (a plain one at stride 1).
          const int64_t first = pad_left - b;  // w*sw >= first
          const int64_t w0 = std::clamp<int64_t>(first <= 0 ? 0 : (first + ph.sw - 1) / ph.sw,
                                                 0, ph.wp);
          const int64_t w1 = std::clamp<int64_t>(
              in_w + first <= 0 ? 0 : (in_w + first + ph.sw - 1) / ph.sw, w0, ph.wp);
          std::fill(row, row + w0, 0.0f);
          const float* src = xr + (w0 * ph.sw - first);
          if (ph.sw == 1)
            std::copy(src, src + (w1 - w0), row + w0);
          else
            for (int64_t w = w0; w < w1; ++w) row[w] = src[(w - w0) * ph.sw];
          std::fill(row + w1, row + ph.wp, 0.0f);
        }
      }
}

// The attributes as this Run plans with them: along an axis with one output, the stride
// selects nothing, and taking it as 1 keeps the phase planes as small as the padded input
// (a huge stride would otherwise ask for stride^2 planes).
ConvAttributes run_attributes(const ConvAttributes& attrs, const ConvProblem& pr) {
  ConvAttributes a = attrs;
  if (pr.out_h == 1) a.sh = 1;
  if (pr.out_w == 1) a.sw = 1;
  return a;
}

// A column convolution (X [C, H, 1], kernel [kh, 1], no width pad: magika's) is the same
// computation over the same memory as a row one (X [C, 1, H], kernel [1, kh]); as a row
// it fills the 16-float phase-plane rows instead of using one float of each. Tap keys
// stay valid: with kw = 1 the tap index ky*kw + kx is ky, and as a row it is kx = ky.
bool as_row(const ConvAttributes& a, ConvProblem& pr) {
  return !a.one_d && a.kw == 1 && pr.in_w == 1 && pr.out_w == 1 && pr.pad_left == 0 &&
         pr.in_h > 1;
}

// A pointwise convolution (1x1 kernel, stride 1, no padding) is the same computation on
// the image flattened to one row: its taps never shift, so the rows need not be padded to
// 16 floats each (a 7x7 image then fills a 64-float panel instead of 112). Only when
// the whole image is already one band (band_rows), so the scratch stays as bounded.
bool as_flat(const ConvAttributes& a, const ConvProblem& pr, int64_t band) {
  return a.kh == 1 && a.kw == 1 && a.sh == 1 && a.sw == 1 && pr.pad_top == 0 &&
         pr.pad_left == 0 && pr.out_h == pr.in_h && pr.out_w == pr.in_w && pr.in_h > 1 &&
         pr.in_w % 16 != 0 && band == pr.out_h;
}

void flatten(ConvProblem& pr) {
  pr.in_w *= pr.in_h;
  pr.out_w = pr.in_w;
  pr.in_h = 1;
  pr.out_h = 1;
}

void swap_axes(ConvAttributes& a, ConvProblem& pr) {
  std::swap(a.kh, a.kw);
  std::swap(a.sh, a.sw);
  std::swap(a.dh, a.dw);
  std::swap(a.pads[0], a.pads[1]);
  std::swap(a.pads[2], a.pads[3]);
  std::swap(pr.in_h, pr.in_w);
  std::swap(pr.out_h, pr.out_w);
  std::swap(pr.pad_top, pr.pad_left);
}

// Whether each column shift gets its own copy of the planes, so that every panel load
// starts 64-byte aligned (one per ISA, not per layer: the bits do not depend on it).
// AVX-512 loads are a whole cache line, and an unaligned one splits across two; AVX2's
// 32-byte loads split half as often, and there the copies' extra footprint (three for a
// 3-wide kernel) cost more than the splits: 10-20% on AlexNet conv2/conv3, measured
// (docs/benchmarks.md).
bool shifted_copies(Isa which) { return which == Isa::kAvx512; }

Phases phase_geometry(const ConvAttributes& a, const ConvProblem& pr, bool copies_in_memory) {
  Phases ph{};
  ph.sh = a.sh;
  ph.sw = a.sw;
  // Kernel dims, dilations and strides are < 2^31 (checked at creation) and out_h/out_w
  // come from in-memory inputs, so hp and wp fit; the products below are checked.
  ph.hp = pr.out_h + (a.kh - 1) * a.dh / a.sh;
  ph.wp = pr.out_w + (a.kw - 1) * a.dw / a.sw;
  ph.row_width = (ph.wp + 15) / 16 * 16;
  ph.plane = checked_mul(ph.hp, ph.row_width, "phase plane size");
  const int64_t phases = checked_mul(a.sh, a.sw, "phase count");
  ph.copies = (a.kw - 1) * a.dw / a.sw + 1;
  ph.stored = copies_in_memory ? ph.copies : 1;
  // The last panel reads up to 16 floats past the planes, plus the column shift when the
  // shifts are offsets into one copy (< wp <= row_width, so the sums below bound it).
  const int64_t slack = copies_in_memory ? 16 : checked_add(16, ph.copies - 1, "phase buffer");
  ph.copy_len = checked_add(
      checked_mul(checked_mul(pr.channels, phases, "phase planes"), ph.plane, "phase buffer"),
      slack, "phase buffer");
  // The whole buffer (every copy: at most `copies`) and the output sums are allocated from
  // these.
  checked_add(checked_mul(ph.copies, ph.copy_len, "phase buffer"), 16, "phase buffer");
  checked_mul(a.out_channels, checked_add(checked_mul(pr.out_h, ph.row_width, "sums"), kWidest,
                                          "sums"),
              "sums");
  return ph;
}

// Where tap r = ky*kw + kx starts, from its channel's planes in the first copy: its
// column shift selects a shifted copy, or is an offset within the one copy.
std::vector<int64_t> tap_offsets(const ConvAttributes& a, const Phases& ph, unsigned tap_bits) {
  std::vector<int64_t> tap_offset(size_t{1} << tap_bits, 0);
  for (int64_t r = 0; r < a.kh * a.kw; ++r) {
    const int64_t ty = (r / a.kw) * a.dh, tx = (r % a.kw) * a.dw;
    const int64_t phase = (ty % a.sh) * a.sw + tx % a.sw;
    const int64_t shift = ph.stored > 1 ? (tx / a.sw) * ph.copy_len : tx / a.sw;
    tap_offset[static_cast<size_t>(r)] = shift + phase * ph.plane + (ty / a.sh) * ph.row_width;
  }
  return tap_offset;
}

// Input channels per block: small enough that what one panel reads from a block (every
// shifted copy and phase, the panel plus the rows its taps reach) fits in ~24 KiB. A
// small image's one panel is narrower than kWidest: its blocks are larger, and the sums
// go through memory once per block (a 7x7 image of 512 channels: 6 blocks of 96, not 11
// of 48).
int64_t channel_block(const ConvAttributes& a, const Phases& ph, int64_t len) {
  const int64_t panel = std::min(kWidest, (len + 15) / 16 * 16);  // a small image's is narrower
  const int64_t rows_reached = (a.kh - 1) * a.dh / a.sh;
  // Sizes are bounded by the buffer checked in phase_geometry; saturate to be safe.
  const double per_channel_bytes = static_cast<double>(ph.stored) * static_cast<double>(a.sh) *
                                   static_cast<double>(a.sw) *
                                   static_cast<double>(panel + rows_reached * ph.row_width) * 4;
  if (per_channel_bytes >= 24576.0) return 1;
  return std::clamp<int64_t>(static_cast<int64_t>(24576.0 / per_channel_bytes), 1,
                            a.in_per_group);
}

// Per output channel, the first tap of each input-channel block (num_blocks + 1 offsets).
// Taps are sorted by key, hence by input channel: block starts by binary search.
template <typename Key>
std::vector<size_t> block_starts(const ConvTaps& w, const Key* keys, const ConvAttributes& a,
                                 int64_t block, int64_t num_blocks) {
  std::vector<size_t> block_ptr(static_cast<size_t>(a.out_channels * (num_blocks + 1)));
  for (int64_t o = 0; o < a.out_channels; ++o) {
    const Key* first = keys + w.ptr[static_cast<size_t>(o)];
    const Key* last = keys + w.ptr[static_cast<size_t>(o) + 1];
    size_t* ptr = block_ptr.data() + o * (num_blocks + 1);
    for (int64_t k = 0; k <= num_blocks; ++k) {
      const auto channel = static_cast<uint32_t>(std::min(k * block, a.in_per_group));
      ptr[k] = static_cast<size_t>(
          std::lower_bound(first, last, channel << w.tap_bits,
                           [](Key key, uint32_t bound) { return key < bound; }) -
          keys);
    }
  }
  return block_ptr;
}

// block_starts, from the weight's cache (sparse_conv.h) or computed and kept there.
template <typename Key>
std::shared_ptr<const std::vector<size_t>> cached_block_starts(const ConvTaps& w,
                                                               const Key* keys,
                                                               const ConvAttributes& a,
                                                               int64_t block,
                                                               int64_t num_blocks) {
  BlockStartsCache& cache = *w.block_starts;
  const std::lock_guard<std::mutex> lock(cache.mutex);
  for (const auto& [size, starts] : cache.by_block)
    if (size == block) return starts;
  auto starts =
      std::make_shared<const std::vector<size_t>>(block_starts(w, keys, a, block, num_blocks));
  if (cache.by_block.size() == BlockStartsCache::kSizes)
    cache.by_block.erase(cache.by_block.begin());  // the oldest
  cache.by_block.emplace_back(block, starts);
  return starts;
}

// Output channels [o0, o1) of one band from their flat sums: keeps the columns
// ow < out_w of each row, then scales them by the channel's row scale (if any), adds the
// bias and applies the fused activation.
template <typename Key>
void store_channels(const Plan<Key>& p, const float* bias, const float* scale,
                    const Activation& act, int64_t o0, int64_t o1, float* yn) {
  const int64_t plane_out = p.out_h * p.out_w;  // this band's
  for (int64_t o = o0; o < o1; ++o) {
    const float* src = p.sums + o * p.len_pad;
    float* dst = yn + o * p.y_plane;
    const float b = bias != nullptr ? bias[o] : 0.0f;
    if (scale != nullptr) {
      const float s = scale[o];
      for (int64_t oh = 0; oh < p.out_h; ++oh)
        for (int64_t ow = 0; ow < p.out_w; ++ow)
          dst[oh * p.out_w + ow] = s * src[oh * p.row_width + ow] + b;
    } else {
      for (int64_t oh = 0; oh < p.out_h; ++oh)
        for (int64_t ow = 0; ow < p.out_w; ++ow)
          dst[oh * p.out_w + ow] = bias != nullptr ? src[oh * p.row_width + ow] + b
                                                   : src[oh * p.row_width + ow];
    }
    act.apply(dst, static_cast<size_t>(plane_out));  // while the plane is still in cache
  }
}

// Flat partial sums per output channel for a band of `rows` rows, padded to whole panels.
int64_t band_len_pad(const Phases& ph, int64_t rows, int64_t out_w) {
  const int64_t len = (rows - 1) * ph.row_width + out_w;
  return (len + kWidest - 1) / kWidest * kWidest;
}

// Output rows per band: as many as keep the scratch of one Run (phase planes of every
// stored copy plus the partial sums) within kConvScratchBytes, at least one.
int64_t band_rows(const ConvAttributes& a, const ConvProblem& pr, bool copies_in_memory) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  const double row_width = d((pr.out_w + (a.kw - 1) * a.dw / a.sw + 15) / 16 * 16);
  const double copies = copies_in_memory ? d((a.kw - 1) * a.dw / a.sw + 1) : 1.0;
  const double planes = d(pr.channels) * d(a.sh) * d(a.sw);
  const double reach = d((a.kh - 1) * a.dh / a.sh);
  const double per_row = 4.0 * row_width * (copies * planes + d(a.out_channels));
  const double slack = copies_in_memory ? 16.0 : 16.0 + d((a.kw - 1) * a.dw / a.sw);
  const double fixed =
      4.0 * (copies * (planes * reach * row_width + slack) + d(a.out_channels) * d(kWidest));
  const double fit = (static_cast<double>(kConvScratchBytes) - fixed) / per_row;
  if (!(fit >= 1.0)) return 1;
  return fit >= d(pr.out_h) ? pr.out_h : static_cast<int64_t>(fit);
}

}  // namespace

ConvTaps pack_taps(const CsrMatrix& w, int64_t taps_per_channel) {
  ConvTaps t;
  while ((int64_t{1} << t.tap_bits) < taps_per_channel) ++t.tap_bits;
  // channel < in_per_group and 2^tap_bits < 2 * taps, so keys stay below 2^32.
  t.ptr = w.row_ptr;
  t.code = w.code;
  t.codebook = w.codebook;
  t.row_scale = w.row_scale;
  const uint64_t channels =
      static_cast<uint64_t>(w.cols) / static_cast<uint64_t>(taps_per_channel);
  const bool narrow = channels << t.tap_bits <= uint64_t{1} << 16;
  if (narrow)
    t.key16.reserve(w.col.size());
  else
    t.key32.reserve(w.col.size());
  for (const uint32_t c : w.col) {
    const auto channel = static_cast<uint32_t>(c / static_cast<uint64_t>(taps_per_channel));
    const auto r = static_cast<uint32_t>(c % static_cast<uint64_t>(taps_per_channel));
    const uint32_t key = channel << t.tap_bits | r;
    if (narrow)
      t.key16.push_back(static_cast<uint16_t>(key));
    else
      t.key32.push_back(key);
  }
  return t;
}

void sparse_conv(const Ort::KernelContext& ctx, const ConvTaps& w, const ConvAttributes& attrs,
                 const Activation& act, const ConvProblem& problem) {
  ConvProblem pr = problem;
  ConvAttributes a = run_attributes(attrs, pr);
  if (as_row(a, pr)) swap_axes(a, pr);
  // Output rows in bands of `rows`, so the scratch stays under kConvScratchBytes whatever
  // the image size; the planes are laid out for a whole band (the last one uses less).
  const bool copies_in_memory = shifted_copies(isa());
  if (as_flat(a, pr, band_rows(a, pr, copies_in_memory))) flatten(pr);
  const int64_t rows = band_rows(a, pr, copies_in_memory);
  ConvProblem band_pr = pr;
  band_pr.out_h = rows;
  const Phases ph = phase_geometry(a, band_pr, copies_in_memory);
  const std::vector<int64_t> tap_offset = tap_offsets(a, ph, w.tap_bits);
  const int64_t block = channel_block(a, ph, (rows - 1) * ph.row_width + pr.out_w);
  const int64_t num_blocks = (a.in_per_group + block - 1) / block;
  const int64_t len_pad = band_len_pad(ph, rows, pr.out_w);
  // With AVX-512 (shifted_copies), copy s is the phase planes shifted left by s floats:
  // with row_width a multiple of 16 and the buffer 64-byte aligned, tap (c, ky, kx) starts
  // 64-byte aligned in copy (kx*dw) / sw, so no panel load splits a cache line. Otherwise
  // one copy, read at the column shift. The slack at the end of each copy covers the last
  // panel's reads.
  const int64_t scratch_floats =
      checked_add(checked_mul(ph.stored, ph.copy_len, "phase buffer"),
                  checked_mul(a.out_channels, len_pad, "sums"), "conv scratch");
  const Scratch scratch(ctx, static_cast<size_t>(scratch_floats));
  float* copies = scratch.data();
  float* sums = copies + ph.stored * ph.copy_len;
  // Ranges of output channels share each loaded block, and each range reads the whole
  // band once: few ranges (4, of 4 channels or more) keep that traffic low.
  const int64_t chunk = std::max<int64_t>(4, (a.out_channels + 3) / 4);
  const auto tasks = static_cast<size_t>((a.out_channels + chunk - 1) / chunk);
  const int64_t image_in = pr.channels * pr.in_h * pr.in_w;
  const int64_t image_out = a.out_channels * pr.out_h * pr.out_w;
  const float* scale = w.row_scale.empty() ? nullptr : w.row_scale.data();
  const int64_t planes_len = pr.channels * a.sh * a.sw * ph.plane;
  // The rest once per key width (ConvTaps: 16- or 32-bit keys).
  auto run = [&](const auto* keys) {
    using Key = std::remove_cv_t<std::remove_pointer_t<decltype(keys)>>;
    const std::shared_ptr<const std::vector<size_t>> block_ptr =
        cached_block_starts(w, keys, a, block, num_blocks);
    const ChannelsFn<Key> channels = channels_for<Key>(isa());
    for (int64_t n = 0; n < pr.batch; ++n) {
      const float* xn = pr.x + n * image_in;
      float* yn = pr.y + n * image_out;
      for (int64_t r0 = 0; r0 < pr.out_h; r0 += rows) {
        const int64_t band = std::min(rows, pr.out_h - r0);
        // The band's planes: those of the image, starting at phase row r0.
        build_phases(xn, pr.channels, pr.in_h, pr.in_w, pr.pad_top - r0 * a.sh, pr.pad_left, ph,
                     copies);
        std::fill(copies + planes_len, copies + ph.copy_len, 0.0f);
        for (int64_t s = 1; s < ph.stored; ++s) {
          float* copy = copies + s * ph.copy_len;
          std::copy(copies + s, copies + ph.copy_len, copy);
          std::fill(copy + ph.copy_len - s, copy + ph.copy_len, 0.0f);
        }
        const Plan<Key> plan{copies, a.sh * a.sw * ph.plane, ph.row_width, band, pr.out_w,
                             a.out_channels / a.group, a.in_per_group, num_blocks,
                             block_ptr->data(), w.code.data(), keys, w.tap_bits,
                             w.codebook.data(), tap_offset.data(), sums, len_pad,
                             pr.out_h * pr.out_w};
        float* yb = yn + r0 * pr.out_w;
        parallel_for(ctx, tasks, [&](size_t t) {
          const int64_t o0 = static_cast<int64_t>(t) * chunk;
          const int64_t o1 = std::min(a.out_channels, o0 + chunk);
          channels(plan, o0, o1);
          store_channels(plan, pr.bias, scale, act, o0, o1, yb);
        });
      }
      if (any_non_finite(xn, static_cast<size_t>(image_in)))  // IEEE results: non_finite.h
        conv_nan_through_absent(w, a, pr, xn, yn);
    }
  };
  if (w.key32.empty())
    run(w.key16.data());
  else
    run(w.key32.data());
}

}  // namespace dc_onnx
