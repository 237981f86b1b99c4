// The two CSR products behind CompressedGemm and CompressedMatMul. W is the stored
// [rows, cols] matrix, cols = the reduction dimension K. Each output is the sum, in
// stored order, of products with W's non-zeros only, so X = identity reproduces W
// bit-exactly.
#pragma once

#include <cstdint>

#include "ort_api.h"
#include "sparse_weight.h"

namespace dc_onnx {

// y = alpha * acc + beta * C[m * c_sm + n * c_sn] (C may be null: no bias term).
struct Epilogue {
  float alpha = 1.0f;
  float beta = 0.0f;
  const float* c = nullptr;
  int64_t c_sm = 0;
  int64_t c_sn = 0;
};

// Row-major activations, best for few rows (batch 1 GEMV): for m < M, n < W.rows
//   Y[m * W.rows + n] = sum_j W[n, j] * A[m * lda + j].
void csr_rows_times_w(const Ort::KernelContext& ctx, const CsrMatrix& w, const float* a,
                      int64_t num_rows, int64_t lda, float* y, const Epilogue& ep);

// K-major activations, best for many columns: X holds `batches` matrices [K, P]
// (column stride 1, row stride ldx, batch stride x_bs); for n < W.rows, p < P
//   Y[b * y_bs + n * ys_n + p * ys_p] = sum_j W[n, j] * X[b * x_bs + j * ldx + p].
// Inner loops run over p, contiguous in X: vectorisable axpy per non-zero.
struct KMajorProblem {
  const float* x;
  int64_t ldx;
  int64_t x_bs;
  int64_t p;
  int64_t batches;
  float* y;
  int64_t ys_n;
  int64_t ys_p;
  int64_t y_bs;
};
void csr_times_kmajor(const Ort::KernelContext& ctx, const CsrMatrix& w, const KMajorProblem& pr,
                      const Epilogue& ep);

// Copies row-major A [rows, cols] into out [cols, rows] (so csr_times_kmajor can use it).
void transpose(const float* a, int64_t rows, int64_t cols, float* out);

}  // namespace dc_onnx
