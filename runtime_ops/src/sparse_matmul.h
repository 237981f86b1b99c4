// The sparse products behind CompressedGemm and CompressedMatMul, and the resident form
// they read. W is the stored [rows, cols] matrix, cols = the reduction dimension K.
// Every output sums products with W's non-zeros only, in an order fixed by the weight
// and the batch size (never by the thread count), so X = identity reproduces W exactly.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "activation.h"
#include "block_rows.h"
#include "cluster_rows.h"
#include "ort_api.h"
#include "scratch.h"
#include "sparse_weight.h"

namespace dc_onnx {

// The CSR the panels read (9 or more rows of activations): one byte per non-zero for its
// codebook index and the narrowest column index, 3 bytes per non-zero for layers with up
// to 65536 inputs (dense fp32 takes 4 per weight).
struct PanelRows {
  std::vector<size_t> ptr;      // rows + 1 offsets
  std::vector<uint8_t> code;
  std::vector<uint16_t> col16;  // used when cols <= 65536
  std::vector<uint32_t> col32;  // otherwise
};

// A Gemm/MatMul weight: the non-zeros grouped by code (cluster_rows.h), which few rows
// read, and the panels' CSR, derived from them when a Run first needs it: a layer that
// only ever sees batches of 1-8 never holds it (about 3 bytes per non-zero).
class CodedRows {
 public:
  int64_t rows = 0;
  int64_t cols = 0;
  std::array<float, 256> codebook{};
  std::vector<float> row_scale;  // empty, or one per row: multiplies that row's sums
  ClusterRows clusters;
  BlockRows blocks;  // one row of activations, where it pays (block_rows.h); else empty

  // The CSR, built on the first call (thread-safe: concurrent Runs build it once; copies
  // of a CodedRows share it).
  const PanelRows& panels() const;

 private:
  struct Lazy;
  std::shared_ptr<Lazy> lazy_ = make_lazy();
  static std::shared_ptr<Lazy> make_lazy();
};
CodedRows pack_rows(const CsrMatrix& m);

// y = act(alpha * scale[n] * acc + beta * C[m * c_sm + n * c_sn]) (C may be null: no bias
// term; scale is W's row scales, filled in by the products from CodedRows::row_scale; act
// the fused activation, activation.h).
struct Epilogue {
  float alpha = 1.0f;
  float beta = 0.0f;
  const float* c = nullptr;
  int64_t c_sm = 0;
  int64_t c_sn = 0;
  const float* scale = nullptr;
  Activation act;
};

// Row-major activations A [num_rows, K]: for m < num_rows, n < W.rows
//   Y[m * W.rows + n] = sum_j W[n, j] * A[m * K + j].
// Up to 8 rows: the grouped form (cluster_rows.h), each output with the
// bits it has at batch 1. More: A copied K-major, then w_times_kmajor.
void rows_times_w(const Ort::KernelContext& ctx, const CodedRows& w, const float* a,
                  int64_t num_rows, float* y, const Epilogue& ep);

// K-major activations: X holds `batches` matrices [K, P] (row stride ldx, batch stride
// x_bs); every row must be readable up to P rounded up to 16 (see KMajorCopy). For
// n < W.rows, p < P:  Y[b * y_bs + n * ys_n + p * ys_p] = sum_j W[n, j] * X[b][j, p],
// computed 64 columns at a time with the accumulators in registers (panel.h).
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
void w_times_kmajor(const Ort::KernelContext& ctx, const CodedRows& w, const KMajorProblem& pr,
                    const Epilogue& ep);

// `batches` matrices A[b][k, p] = a[b * a_bs + k * a_sk + p * a_sp] copied into a
// zero-padded K-major block [batches, K, ldx], ldx = P rounded up to 16 (above 64, to an
// odd number of 64-byte lines: no cache-set aliasing between K rows), taken from the
// session's arena (scratch.h), so a Run allocates and faults in nothing of its own. Large
// copies are split by K rows over the session's threads.
class KMajorCopy {
 public:
  KMajorCopy(const Ort::KernelContext& ctx, const float* a, int64_t batches, int64_t k,
             int64_t p, int64_t a_bs, int64_t a_sk, int64_t a_sp);
  const float* data() const { return block_.data(); }
  int64_t ldx() const { return ldx_; }

 private:
  int64_t ldx_;
  Scratch block_;
};

}  // namespace dc_onnx
