// CompressedMatMul: ONNX MatMul with one operand replaced by the decoded weight.
#include <vector>

#include "kernel_info.h"
#include "ops.h"
#include "sparse_matmul.h"
#include "weight_loader.h"

namespace dc_onnx {
namespace {

int64_t product(const std::vector<int64_t>& v, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= v[i];
  return p;
}

}  // namespace

MatMulKernel::MatMulKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    const int64_t side = required_int(info, "weight_side");
    if (side != 0 && side != 1) fail("weight_side must be 0 or 1");
    weight_first_ = side == 0;
    act_ = read_activation(info);
    const auto [rows, cols] = matrix_shape(info);
    w_ = load_shared_weight(info, rows, cols, "", pack_rows);
  });
}

void MatMulKernel::compute(OrtKernelContext* context) const {
  with_layer(prefix_, [&] {
    const Ort::KernelContext ctx(context);
    const InputTensor x = float_input(ctx, 0);
    const size_t rank = x.shape.size();
    const int64_t k = w_->cols;
    const int64_t n = w_->rows;
    if (rank == 0) fail_input("X must have rank >= 1");
    // K is X's last dim, or (weight first, rank >= 2) its second to last.
    const size_t k_axis = weight_first_ && rank >= 2 ? rank - 2 : rank - 1;
    if (x.shape[k_axis] != k)
      fail_input("X of shape " + shape_str(x.shape) + " has " + std::to_string(x.shape[k_axis]) +
                 " on the reduction axis but the weight has K=" + std::to_string(k));

    std::vector<int64_t> y_shape(x.shape.begin(), x.shape.begin() + static_cast<long>(k_axis));
    Epilogue ep;
    ep.act = act_;
    if (!weight_first_ || rank == 1) {
      // Y[..., n] = X[..., :] . Wm[n, :]  (also Wm @ x for a 1-D x)
      y_shape.push_back(n);
      float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
      const int64_t rows = product(x.shape, 0, k_axis);
      if (rows > 0) rows_times_w(ctx, *w_, x.data, rows, y, ep);
      return;
    }
    // Y[b] = Wm @ X[b], X[b] of shape [K, P]: already K-major, copied to pad its rows.
    const int64_t p = x.shape[rank - 1];
    y_shape.push_back(n);
    y_shape.push_back(p);
    float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
    const int64_t batches = product(x.shape, 0, rank - 2);
    if (batches == 0 || p == 0) return;
    const KMajorCopy xt(ctx, x.data, batches, k, p, k * p, p, 1);
    const KMajorProblem pr{xt.data(), xt.ldx(), k * xt.ldx(), p, batches, y, p, 1, n * p};
    w_times_kmajor(ctx, *w_, pr, ep);
  });
}

}  // namespace dc_onnx
