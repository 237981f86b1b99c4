#include "sparse_matmul.h"

#include <algorithm>

#include "parallel.h"
#include "simd.h"

namespace dc_onnx {
namespace {

inline float finish(float acc, int64_t m, int64_t n, const Epilogue& ep) {
  float v = ep.alpha == 1.0f ? acc : ep.alpha * acc;
  if (ep.c != nullptr) v += ep.beta * ep.c[m * ep.c_sm + n * ep.c_sn];
  return v;
}

// Sparse row . dense row, four partial sums (order differs from one running sum only
// by rounding; for an identity input all but one product is exactly zero).
inline float sparse_dot(const uint32_t* col, const float* val, size_t nnz, const float* x) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  size_t j = 0;
  for (; j + 4 <= nnz; j += 4) {
    s0 += val[j] * x[col[j]];
    s1 += val[j + 1] * x[col[j + 1]];
    s2 += val[j + 2] * x[col[j + 2]];
    s3 += val[j + 3] * x[col[j + 3]];
  }
  for (; j < nnz; ++j) s0 += val[j] * x[col[j]];
  return (s0 + s1) + (s2 + s3);
}

constexpr int64_t kBlockP = 64;  // output columns accumulated at once (fits in L1)

// Output rows [n0, n1) of csr_rows_times_w.
DC_ONNX_HOT void rows_task(const CsrMatrix& w, const float* a, int64_t num_rows, int64_t lda,
                           float* y, const Epilogue& ep, int64_t n0, int64_t n1) {
  const int64_t n_out = w.rows;
  for (int64_t m = 0; m < num_rows; ++m) {
    const float* x = a + m * lda;
    float* yr = y + m * n_out;
    for (int64_t n = n0; n < n1; ++n) {
      const size_t b = w.row_ptr[static_cast<size_t>(n)];
      const size_t e = w.row_ptr[static_cast<size_t>(n) + 1];
      yr[n] = finish(sparse_dot(w.col.data() + b, w.val.data() + b, e - b, x), m, n, ep);
    }
  }
}

// Output rows [n0, n1) x columns [p0, p0 + width) of batch b for csr_times_kmajor.
DC_ONNX_HOT void kmajor_task(const CsrMatrix& w, const KMajorProblem& pr, const Epilogue& ep,
                             int64_t b, int64_t p0, int64_t width, int64_t n0, int64_t n1) {
  const float* xb = pr.x + b * pr.x_bs + p0;
  float* yb = pr.y + b * pr.y_bs + p0 * pr.ys_p;
  float acc[kBlockP];
  for (int64_t n = n0; n < n1; ++n) {
    std::fill(acc, acc + width, 0.0f);
    const size_t e = w.row_ptr[static_cast<size_t>(n) + 1];
    for (size_t j = w.row_ptr[static_cast<size_t>(n)]; j < e; ++j) {
      const float v = w.val[j];
      const float* xr = xb + static_cast<int64_t>(w.col[j]) * pr.ldx;
      for (int64_t i = 0; i < width; ++i) acc[i] += v * xr[i];
    }
    float* yr = yb + n * pr.ys_n;
    for (int64_t i = 0; i < width; ++i) yr[i * pr.ys_p] = finish(acc[i], p0 + i, n, ep);
  }
}

}  // namespace

void csr_rows_times_w(const Ort::KernelContext& ctx, const CsrMatrix& w, const float* a,
                      int64_t num_rows, int64_t lda, float* y, const Epilogue& ep) {
  const int64_t n_out = w.rows;
  if (num_rows == 0 || n_out == 0) return;
  const double nnz_per_row = static_cast<double>(w.val.size()) / static_cast<double>(n_out) + 1.0;
  const size_t tasks_n = task_count(n_out, nnz_per_row * static_cast<double>(num_rows));
  const int64_t chunk = (n_out + static_cast<int64_t>(tasks_n) - 1) / static_cast<int64_t>(tasks_n);
  const auto tasks = static_cast<size_t>((n_out + chunk - 1) / chunk);
  parallel_for(ctx, tasks, [&](size_t t) {
    const int64_t n0 = static_cast<int64_t>(t) * chunk;
    rows_task(w, a, num_rows, lda, y, ep, n0, std::min(n_out, n0 + chunk));
  });
}

void csr_times_kmajor(const Ort::KernelContext& ctx, const CsrMatrix& w, const KMajorProblem& pr,
                      const Epilogue& ep) {
  const int64_t n_out = w.rows;
  if (pr.batches == 0 || pr.p == 0 || n_out == 0) return;
  const int64_t p_blocks = (pr.p + kBlockP - 1) / kBlockP;
  const int64_t cells = pr.batches * p_blocks;  // independent (batch, column block) pairs
  const double nnz_per_row = static_cast<double>(w.val.size()) / static_cast<double>(n_out) + 1.0;
  const double block_width = static_cast<double>(std::min(pr.p, kBlockP));
  // Tasks = (batch, column block) cells x chunks of output rows.
  const size_t want = task_count(cells * n_out, nnz_per_row * block_width);
  const int64_t row_tasks = std::max<int64_t>(1, static_cast<int64_t>(want) / cells);
  const int64_t chunk = (n_out + row_tasks - 1) / row_tasks;
  const int64_t chunks = (n_out + chunk - 1) / chunk;
  parallel_for(ctx, static_cast<size_t>(cells * chunks), [&](size_t t) {
    const int64_t cell = static_cast<int64_t>(t) / chunks;
    const int64_t n0 = (static_cast<int64_t>(t) % chunks) * chunk;
    const int64_t n1 = std::min(n_out, n0 + chunk);
    const int64_t b = cell / p_blocks;
    const int64_t p0 = (cell % p_blocks) * kBlockP;
    kmajor_task(w, pr, ep, b, p0, std::min(kBlockP, pr.p - p0), n0, n1);
  });
}

void transpose(const float* a, int64_t rows, int64_t cols, float* out) {
  constexpr int64_t kTile = 32;  // tiles keep both sides cache-friendly
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile)
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c)
          out[c * rows + r] = a[r * cols + c];
}

}  // namespace dc_onnx
