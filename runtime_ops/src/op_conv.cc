// CompressedConv, the operator: reads the attributes and the weight once, picks the
// sparse taps (sparse_conv.h) or, for dense layers, ORT's own Conv (dense_conv.h), and
// on every Run checks X, allocates Y and dispatches.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checked.h"
#include "kernel_info.h"
#include "ops.h"
#include "weight_loader.h"

namespace dc_onnx {
namespace {

// The decoded weight as dense fp32 [M, C/group * kh * kw], row scales applied, for DenseConv.
std::vector<float> densify(const CsrMatrix& w) {
  const auto cols = static_cast<size_t>(w.cols);
  std::vector<float> dense(static_cast<size_t>(w.rows) * cols, 0.0f);
  for (size_t r = 0; r < static_cast<size_t>(w.rows); ++r)
    for (size_t j = w.row_ptr[r]; j < w.row_ptr[r + 1]; ++j)
      dense[r * cols + w.col[j]] =
          w.row_scale.empty() ? w.codebook[w.code[j]] : w.row_scale[r] * w.codebook[w.code[j]];
  return dense;
}

}  // namespace

ConvKernel::ConvKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    const std::vector<int64_t> shape = required_ints(info, "weight_shape");
    check_weight_shape(shape, {3, 4});
    attrs_ = read_conv_attributes(info, shape);
    act_ = read_activation(info);
    const int64_t taps = attrs_.taps_per_channel();  // dims <= 2^31-1: no overflow here
    if (taps > INT32_MAX / attrs_.in_per_group)
      fail("weight_shape " + shape_str(shape) + " is too large");
    const int64_t cols = attrs_.in_per_group * taps;
    // ORT's Conv would pad SAME_* layers differently from one release to the next.
    const bool may_run_dense = attrs_.auto_pad == "NOTSET" || attrs_.auto_pad == "VALID";
    const std::string params = std::to_string(taps) + (may_run_dense ? " dense ok" : "");
    weight_ = load_shared_weight(info, attrs_.out_channels, cols, params, [&](const CsrMatrix& w) {
      const double density =
          static_cast<double>(w.code.size()) / static_cast<double>(attrs_.out_channels * cols);
      ConvWeight form;
      form.dense = may_run_dense && density >= kDenseConvDensity;
      if (form.dense)
        form.values = densify(w);
      else
        form.taps = pack_taps(w, taps);
      return form;
    });
    if (weight_->dense)
      dense_ = std::make_unique<DenseConv>(
          info, std::shared_ptr<const std::vector<float>>(weight_, &weight_->values), shape,
          attrs_, has_input(info, 6));
  });
}

void ConvKernel::compute(OrtKernelContext* context) const {
  with_layer(prefix_, [&] {
    const Ort::KernelContext ctx(context);
    const ConvAttributes& a = attrs_;
    const InputTensor x = float_input(ctx, 0);
    const size_t want_rank = a.one_d ? 3 : 4;
    if (x.shape.size() != want_rank)
      fail_input("X must have rank " + std::to_string(want_rank) + ", got shape " +
                 shape_str(x.shape));
    ConvProblem pr{};
    pr.x = x.data;
    pr.batch = x.shape[0];
    pr.channels = x.shape[1];
    if (pr.channels != a.in_per_group * a.group)
      fail_input("X of shape " + shape_str(x.shape) + " has " + std::to_string(pr.channels) +
                 " channels, the weight expects " + std::to_string(a.in_per_group * a.group));
    pr.in_h = a.one_d ? 1 : x.shape[2];
    pr.in_w = x.shape.back();
    pr.out_h = a.one_d ? 1 : output_size(a.auto_pad, pr.in_h, a.kh, a.sh, a.dh, a.pads[0],
                                         a.pads[2], &pr.pad_top);
    pr.out_w = output_size(a.auto_pad, pr.in_w, a.kw, a.sw, a.dw, a.pads[1], a.pads[3],
                           &pr.pad_left);
    pr.bias = bias_input(ctx);

    // Each factor fits; their product is checked before ORT sizes Y with it.
    checked_mul(checked_mul(pr.batch, a.out_channels, "Y size"),
                checked_mul(pr.out_h, pr.out_w, "Y size"), "Y size");
    std::vector<int64_t> y_shape = {pr.batch, a.out_channels, pr.out_h, pr.out_w};
    if (a.one_d) y_shape.erase(y_shape.begin() + 2);
    Ort::UnownedValue y_value = ctx.GetOutput(0, y_shape);
    pr.y = y_value.GetTensorMutableData<float>();
    if (pr.batch * a.out_channels == 0 || pr.out_h * pr.out_w == 0) return;
    if (dense_) {
      const OrtValue* b =
          pr.bias != nullptr ? static_cast<const OrtValue*>(ctx.GetInput(6)) : nullptr;
      dense_->run(ctx, ctx.GetInput(0), b, y_value);
      act_.apply(pr.y, static_cast<size_t>(pr.batch * a.out_channels * pr.out_h * pr.out_w));
      return;
    }
    sparse_conv(ctx, weight_->taps, a, act_, pr);
  });
}

const float* ConvKernel::bias_input(const Ort::KernelContext& ctx) const {
  if (ctx.GetInputCount() <= 6 || ctx.GetInput(6) == nullptr) return nullptr;
  const InputTensor b = float_input(ctx, 6);
  if (b.shape.size() != 1 || b.shape[0] != attrs_.out_channels)
    fail_input("bias B of shape " + shape_str(b.shape) + " must be [" +
               std::to_string(attrs_.out_channels) + "]");
  return b.data;
}

}  // namespace dc_onnx
