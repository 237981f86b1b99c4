// CompressedGemm: ONNX Gemm with B replaced by the decoded sparse weight.
#include <vector>

#include "kernel_info.h"
#include "ops.h"
#include "sparse_matmul.h"
#include "weight_loader.h"

namespace dc_onnx {
namespace {

// Strides that read C, unidirectionally broadcast to [M, N] (scalar, [N], [1,N], [M,1],
// [M,N], ...), as element offsets per step of m and of n.
void broadcast_c(const std::vector<int64_t>& s, int64_t m, int64_t n, Epilogue& ep) {
  auto bad = [&] {
    fail_input("C of shape " + shape_str(s) + " does not broadcast to [" + std::to_string(m) +
               "," + std::to_string(n) + "]");
  };
  if (s.size() > 2) bad();
  const int64_t cm = s.size() == 2 ? s[0] : 1;
  const int64_t cn = s.empty() ? 1 : s.back();
  if ((cm != 1 && cm != m) || (cn != 1 && cn != n)) bad();
  ep.c_sm = cm == 1 ? 0 : cn;
  ep.c_sn = cn == 1 ? 0 : 1;
}

}  // namespace

GemmKernel::GemmKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    alpha_ = attr_float(info, "alpha").value_or(1.0f);
    beta_ = attr_float(info, "beta").value_or(1.0f);
    const int64_t trans_a = attr_int(info, "transA").value_or(0);
    if (trans_a != 0 && trans_a != 1) fail("transA must be 0 or 1");
    trans_a_ = trans_a == 1;
    act_ = read_activation(info);
    const auto [rows, cols] = matrix_shape(info);
    w_ = load_shared_weight(info, rows, cols, "", pack_rows);
  });
}

void GemmKernel::compute(OrtKernelContext* context) const {
  with_layer(prefix_, [&] {
    const Ort::KernelContext ctx(context);
    const InputTensor a = float_input(ctx, 0);
    if (a.shape.size() != 2) fail_input("A must be 2-D, got shape " + shape_str(a.shape));
    const int64_t m = trans_a_ ? a.shape[1] : a.shape[0];
    const int64_t k = trans_a_ ? a.shape[0] : a.shape[1];
    if (k != w_->cols)
      fail_input("A of shape " + shape_str(a.shape) + (trans_a_ ? " (transA)" : "") +
                 " has K=" + std::to_string(k) + " but the weight has K=" +
                 std::to_string(w_->cols));
    const int64_t n = w_->rows;

    Epilogue ep;
    ep.alpha = alpha_;
    ep.act = act_;
    if (ctx.GetInputCount() > 6) {
      const Ort::ConstValue c = ctx.GetInput(6);
      if (c != nullptr) {
        const InputTensor ct = float_input(ctx, 6);
        broadcast_c(ct.shape, m, n, ep);
        ep.c = ct.data;
        ep.beta = beta_;
      }
    }
    float* y = ctx.GetOutput(0, {m, n}).GetTensorMutableData<float>();
    if (m == 0) return;

    if (!trans_a_) {
      rows_times_w(ctx, *w_, a.data, m, y, ep);
      return;
    }
    // A [K, M] is already K-major: copied only to pad its rows to 16 columns.
    const KMajorCopy x(ctx, a.data, 1, k, m, 0, m, 1);
    const KMajorProblem pr{x.data(), x.ldx(), 0, m, 1, y, 1, n, 0};
    w_times_kmajor(ctx, *w_, pr, ep);
  });
}

}  // namespace dc_onnx
