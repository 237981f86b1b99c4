#include "conv_attributes.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernel_info.h"

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

}  // namespace

std::vector<int64_t> ConvAttributes::pad_list() const {
  if (one_d) return {pads[1], pads[3]};
  return {pads[0], pads[1], pads[2], pads[3]};
}

ConvAttributes read_conv_attributes(const OrtKernelInfo* info,
                                    const std::vector<int64_t>& shape) {
  ConvAttributes a;
  a.one_d = shape.size() == 3;
  const size_t spatial = shape.size() - 2;
  a.out_channels = shape[0];
  a.in_per_group = shape[1];
  a.kh = a.one_d ? 1 : shape[2];
  a.kw = shape.back();

  a.group = attr_int(info, "group").value_or(1);
  if (a.group < 1 || a.out_channels % a.group != 0)
    fail("group " + std::to_string(a.group) + " does not divide the " +
         std::to_string(a.out_channels) + " output channels");
  if (auto ks = attr_ints(info, "kernel_shape");
      ks && !std::equal(ks->begin(), ks->end(), shape.begin() + 2, shape.end()))
    fail("kernel_shape " + shape_str(*ks) + " disagrees with weight_shape " + shape_str(shape));
  const std::vector<int64_t> strides = ints_or(info, "strides", spatial, 1);
  const std::vector<int64_t> dilations = ints_or(info, "dilations", spatial, 1);
  const std::vector<int64_t> pads = ints_or(info, "pads", 2 * spatial, 0);
  // Upper bounds keep every per-axis length (span, padded input) within int64; the
  // buffer sizes they lead to are checked at run time (checked.h).
  for (int64_t v : strides)
    if (v < 1 || v > INT32_MAX) fail("strides must be in 1..2^31-1, got " + shape_str(strides));
  for (int64_t v : dilations)
    if (v < 1 || v > INT32_MAX)
      fail("dilations must be in 1..2^31-1, got " + shape_str(dilations));
  for (int64_t v : pads)
    if (v < 0 || v > INT32_MAX) fail("pads must be in 0..2^31-1, got " + shape_str(pads));
  if (a.in_per_group > INT32_MAX / a.group)
    fail("group " + std::to_string(a.group) + " times " + std::to_string(a.in_per_group) +
         " input channels per group exceeds 2^31-1 channels");
  a.auto_pad = attr_string(info, "auto_pad").value_or("NOTSET");
  if (a.auto_pad != "NOTSET" && a.auto_pad != "VALID" && a.auto_pad != "SAME_UPPER" &&
      a.auto_pad != "SAME_LOWER")
    fail("unknown auto_pad '" + a.auto_pad + "'");
  if (a.one_d) {
    a.sw = strides[0];
    a.dw = dilations[0];
    a.pads[1] = pads[0];
    a.pads[3] = pads[1];
  } else {
    a.sh = strides[0];
    a.sw = strides[1];
    a.dh = dilations[0];
    a.dw = dilations[1];
    std::copy(pads.begin(), pads.end(), a.pads);
  }
  return a;
}

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

}  // namespace dc_onnx
