#include "sparse_matmul.h"

#include <algorithm>

#include "non_finite.h"
#include "panel.h"
#include "parallel.h"
#include "simd.h"
#include "sparse_dot.h"

namespace dc_onnx {
namespace {

// Below this many rows, sparse dots per row beat 16-column panels.
constexpr int64_t kFewRows = 4;

inline float finish(float acc, int64_t m, int64_t n, const Epilogue& ep) {
  if (ep.scale != nullptr) acc *= ep.scale[n];
  float v = ep.alpha == 1.0f ? acc : ep.alpha * acc;
  if (ep.c != nullptr) v += ep.beta * ep.c[m * ep.c_sm + n * ep.c_sn];
  return ep.act(v);
}

// Output rows [n0, n1) of dot_rows.
template <typename Index>
void rows_task(const CodedRows& w, const Index* col, const float* a, int64_t num_rows,
               int64_t lda, float* y, const Epilogue& ep, int64_t n0, int64_t n1) {
  const int64_t n_out = w.rows;
  for (int64_t m = 0; m < num_rows; ++m) {
    const float* x = a + m * lda;
    float* yr = y + m * n_out;
#ifdef DC_ONNX_AVX512_DOT
    // AVX2 takes the scalar loop: on AMD Zen 3 an 8-lane AVX2 version with gathers
    // (codebook through vpermps) measured 8-10% slower than it (docs/benchmarks.md).
    if (isa() == Isa::kAvx512) {
      sparse_dots_avx512(w.ptr.data(), col, w.code.data(), w.codebook.data(), x,
                         w.small_codebook, n0, n1, yr + n0);
      for (int64_t n = n0; n < n1; ++n) yr[n] = finish(yr[n], m, n, ep);
      continue;
    }
#endif
    for (int64_t n = n0; n < n1; ++n) {
      const size_t b = w.ptr[static_cast<size_t>(n)];
      const size_t nnz = w.ptr[static_cast<size_t>(n) + 1] - b;
      const float acc =
          sparse_dot_scalar(col + b, w.code.data() + b, nnz, w.codebook.data(), x);
      yr[n] = finish(acc, m, n, ep);
    }
  }
}

// Output rows [n0, n1) x columns [p0, p0 + width) of batch b for w_times_kmajor, with
// `Vec` registers (panel.h); instantiated once per instruction set below.
// (Blocking K so that x stays in L2, 64 rows at a time, measured 1.4x slower on AVX2.)
template <typename Vec, typename Index>
DC_ONNX_INLINE void kmajor_rows(const CodedRows& w, const Index* col, const KMajorProblem& pr,
                                const Epilogue& ep, int64_t b, int64_t p0, int64_t width,
                                int64_t n0, int64_t n1) {
  const float* xb = pr.x + b * pr.x_bs + p0;
  float* yb = pr.y + b * pr.y_bs + p0 * pr.ys_p;
  const int64_t ldx = pr.ldx;
  const auto offset = [&](size_t j) { return col[j] * ldx; };
  alignas(64) float acc[16 * kMaxV];  // widths are <= kPanel; sized for any V
  for (int64_t n = n0; n < n1; ++n) {
    sparse_panel_any<Vec>(width, w.code.data(), w.ptr[static_cast<size_t>(n)],
                          w.ptr[static_cast<size_t>(n) + 1], w.codebook.data(), xb, offset,
                          nullptr, acc);
    float* yr = yb + n * pr.ys_n;
    for (int64_t i = 0; i < width; ++i) yr[i * pr.ys_p] = finish(acc[i], p0 + i, n, ep);
  }
}

template <typename Vec>
DC_ONNX_INLINE void kmajor_rows(const CodedRows& w, const KMajorProblem& pr, const Epilogue& ep,
                                int64_t b, int64_t p0, int64_t width, int64_t n0, int64_t n1) {
  if (w.col32.empty())
    kmajor_rows<Vec>(w, w.col16.data(), pr, ep, b, p0, width, n0, n1);
  else
    kmajor_rows<Vec>(w, w.col32.data(), pr, ep, b, p0, width, n0, n1);
}

#ifdef DC_ONNX_X86
DC_ONNX_TARGET_AVX512 void kmajor_avx512(const CodedRows& w, const KMajorProblem& pr,
                                         const Epilogue& ep, int64_t b, int64_t p0,
                                         int64_t width, int64_t n0, int64_t n1) {
  kmajor_rows<Vec16>(w, pr, ep, b, p0, width, n0, n1);
}
DC_ONNX_TARGET_AVX2 void kmajor_avx2(const CodedRows& w, const KMajorProblem& pr,
                                     const Epilogue& ep, int64_t b, int64_t p0, int64_t width,
                                     int64_t n0, int64_t n1) {
  kmajor_rows<Vec8>(w, pr, ep, b, p0, width, n0, n1);
}
#endif
void kmajor_baseline(const CodedRows& w, const KMajorProblem& pr, const Epilogue& ep,
                     int64_t b, int64_t p0, int64_t width, int64_t n0, int64_t n1) {
  kmajor_rows<Vec4>(w, pr, ep, b, p0, width, n0, n1);
}

void kmajor_task(const CodedRows& w, const KMajorProblem& pr, const Epilogue& ep, int64_t b,
                 int64_t p0, int64_t width, int64_t n0, int64_t n1) {
#ifdef DC_ONNX_X86
  if (isa() == Isa::kAvx512) return kmajor_avx512(w, pr, ep, b, p0, width, n0, n1);
  if (isa() == Isa::kAvx2) return kmajor_avx2(w, pr, ep, b, p0, width, n0, n1);
#endif
  kmajor_baseline(w, pr, ep, b, p0, width, n0, n1);
}

// rows_times_w for few rows: a sparse dot per output, parallel over output rows.
void dot_rows(const Ort::KernelContext& ctx, const CodedRows& w, const float* a,
              int64_t num_rows, float* y, const Epilogue& ep) {
  const int64_t lda = w.cols;
  const int64_t n_out = w.rows;
  if (num_rows == 0 || n_out == 0) return;
  const double nnz_per_row =
      static_cast<double>(w.code.size()) / static_cast<double>(n_out) + 1.0;
  const size_t tasks_n = task_count(n_out, nnz_per_row * static_cast<double>(num_rows));
  const int64_t chunk = (n_out + static_cast<int64_t>(tasks_n) - 1) / static_cast<int64_t>(tasks_n);
  const auto tasks = static_cast<size_t>((n_out + chunk - 1) / chunk);
  parallel_for(ctx, tasks, [&](size_t t) {
    const int64_t n0 = static_cast<int64_t>(t) * chunk;
    const int64_t n1 = std::min(n_out, n0 + chunk);
    if (w.col32.empty())
      rows_task(w, w.col16.data(), a, num_rows, lda, y, ep, n0, n1);
    else
      rows_task(w, w.col32.data(), a, num_rows, lda, y, ep, n0, n1);
  });
}

}  // namespace

CodedRows pack_rows(const CsrMatrix& m) {
  CodedRows w;
  w.rows = m.rows;
  w.cols = m.cols;
  w.ptr = m.row_ptr;
  w.code = m.code;
  w.codebook = m.codebook;
  w.row_scale = m.row_scale;
  w.small_codebook = true;
  for (size_t i = 32; i < w.codebook.size(); ++i) w.small_codebook &= w.codebook[i] == 0.0f;
  if (m.cols <= 65536)
    w.col16.assign(m.col.begin(), m.col.end());  // every column index is < 65536
  else
    w.col32 = m.col;
  return w;
}

// The caller's epilogue with W's row scales.
Epilogue scaled(const CodedRows& w, const Epilogue& ep) {
  Epilogue out = ep;
  out.scale = w.row_scale.empty() ? nullptr : w.row_scale.data();
  return out;
}

void rows_times_w(const Ort::KernelContext& ctx, const CodedRows& w, const float* a,
                  int64_t num_rows, float* y, const Epilogue& given) {
  const Epilogue ep = scaled(w, given);
  if (num_rows < kFewRows) {
    dot_rows(ctx, w, a, num_rows, y, ep);
    if (any_non_finite(a, static_cast<size_t>(num_rows * w.cols)))  // IEEE: non_finite.h
      for (int64_t m = 0; m < num_rows; ++m)
        nan_through_absent(w, a + m * w.cols, 1, y + m * w.rows, 1);
    return;
  }
  int64_t ldx = 0;
  const std::vector<float> x = kmajor_copy(a, 1, w.cols, num_rows, 0, 1, w.cols, &ldx);
  const KMajorProblem pr{x.data(), ldx, 0, num_rows, 1, y, 1, w.rows, 0};
  w_times_kmajor(ctx, w, pr, ep);
}

void w_times_kmajor(const Ort::KernelContext& ctx, const CodedRows& w, const KMajorProblem& pr,
                    const Epilogue& given) {
  const Epilogue ep = scaled(w, given);
  const int64_t n_out = w.rows;
  if (pr.batches == 0 || pr.p == 0 || n_out == 0) return;
  const int64_t p_blocks = (pr.p + kPanel - 1) / kPanel;
  const int64_t cells = pr.batches * p_blocks;  // independent (batch, column block) pairs
  const double nnz_per_row =
      static_cast<double>(w.code.size()) / static_cast<double>(n_out) + 1.0;
  const double block_width = static_cast<double>(std::min(pr.p, kPanel));
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
    const int64_t p0 = (cell % p_blocks) * kPanel;
    kmajor_task(w, pr, ep, b, p0, std::min(kPanel, pr.p - p0), n0, n1);
  });
  for (int64_t b = 0; b < pr.batches; ++b) {  // IEEE results for NaN/Inf: non_finite.h
    const float* xb = pr.x + b * pr.x_bs;
    if (!any_non_finite(xb, static_cast<size_t>(w.cols * pr.ldx))) continue;
    for (int64_t p = 0; p < pr.p; ++p)
      nan_through_absent(w, xb + p, pr.ldx, pr.y + b * pr.y_bs + p * pr.ys_p, pr.ys_n);
  }
}

std::vector<float> kmajor_copy(const float* a, int64_t batches, int64_t k, int64_t p,
                               int64_t a_bs, int64_t a_sk, int64_t a_sp, int64_t* ldx) {
  *ldx = (p + 15) / 16 * 16;
  std::vector<float> out(static_cast<size_t>(batches * k * *ldx), 0.0f);
  constexpr int64_t kTile = 32;  // tiles keep both sides cache-friendly when transposing
  for (int64_t b = 0; b < batches; ++b) {
    const float* ab = a + b * a_bs;
    float* ob = out.data() + b * k * *ldx;
    for (int64_t k0 = 0; k0 < k; k0 += kTile)
      for (int64_t p0 = 0; p0 < p; p0 += kTile)
        for (int64_t pi = p0; pi < std::min(p, p0 + kTile); ++pi)
          for (int64_t ki = k0; ki < std::min(k, k0 + kTile); ++ki)
            ob[ki * *ldx + pi] = ab[ki * a_sk + pi * a_sp];
  }
  return out;
}

}  // namespace dc_onnx
