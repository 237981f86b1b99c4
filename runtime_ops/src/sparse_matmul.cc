#include "sparse_matmul.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>

#include "checked.h"
#include "non_finite.h"
#include "panel.h"
#include "parallel.h"
#include "scratch.h"
#include "simd.h"

#ifdef DC_ONNX_X86
#include <immintrin.h>
#endif

namespace dc_onnx {
namespace {

// Up to this many rows of A, the grouped form beats 16-column panels (docs/benchmarks.md).
constexpr int64_t kClusterRowsMax = 8;

inline float finish(float acc, int64_t m, int64_t n, const Epilogue& ep) {
  if (ep.scale != nullptr) acc *= ep.scale[n];
  float v = ep.alpha == 1.0f ? acc : ep.alpha * acc;
  if (ep.c != nullptr) v += ep.beta * ep.c[m * ep.c_sm + n * ep.c_sn];
  return ep.act(v);
}

// finish() over a panel row: acc[i] for column p0 + i of output row n, each step one loop
// (the per-element branches took most of a Run where a row has few non-zeros).
inline void finish_panel(float* acc, int64_t width, int64_t p0, int64_t n, const Epilogue& ep) {
  if (ep.scale != nullptr)
    for (int64_t i = 0; i < width; ++i) acc[i] *= ep.scale[n];
  if (ep.alpha != 1.0f)
    for (int64_t i = 0; i < width; ++i) acc[i] = ep.alpha * acc[i];
  if (ep.c != nullptr)
    for (int64_t i = 0; i < width; ++i) acc[i] += ep.beta * ep.c[(p0 + i) * ep.c_sm + n * ep.c_sn];
  ep.act.apply(acc, static_cast<size_t>(width));
}

// Output rows [n0, n1) x columns [p0, p0 + width) of batch b for w_times_kmajor, with
// `Vec` registers (panel.h); instantiated once per instruction set below.
// (Blocking K so that x stays in L2, 64 rows at a time, measured 1.4x slower on AVX2.)
template <typename Vec, typename Index>
DC_ONNX_INLINE void kmajor_rows(const CodedRows& w, const PanelRows& csr, const Index* col,
                                const KMajorProblem& pr, const Epilogue& ep, int64_t b,
                                int64_t p0, int64_t width, int64_t n0, int64_t n1) {
  const float* xb = pr.x + b * pr.x_bs + p0;
  float* yb = pr.y + b * pr.y_bs + p0 * pr.ys_p;
  const int64_t ldx = pr.ldx;
  const auto offset = [&](size_t j) { return col[j] * ldx; };
  alignas(64) float acc[16 * kMaxV];  // widths are <= kPanel; sized for any V
  // The two loops below spell the panel call out: a lambda would not inherit this
  // function's target ISA, and the panel inlined into it ran 7-11x slower (measured).
  if (pr.ys_p == 1) {  // Y's rows are output rows: each panel row is stored as it is
    for (int64_t n = n0; n < n1; ++n) {
      sparse_panel_any<Vec>(width, csr.code.data(), csr.ptr[static_cast<size_t>(n)],
                            csr.ptr[static_cast<size_t>(n) + 1], w.codebook.data(), xb, offset,
                            nullptr, acc);
      finish_panel(acc, width, p0, n, ep);
      std::copy(acc, acc + width, yb + n * pr.ys_n);
    }
    return;
  }
  // Y [P, N] (X @ W): a panel row is a column of Y. kTileRows of them are kept and then
  // stored a row of Y at a time, which writes each cache line of Y once instead of
  // touching 64 lines (64 rows of Y) per output row.
  constexpr int64_t kTileRows = 16;
  alignas(64) float tile[kTileRows * kPanel];
  for (int64_t nb = n0; nb < n1; nb += kTileRows) {
    const int64_t rows = std::min(kTileRows, n1 - nb);
    for (int64_t r = 0; r < rows; ++r) {
      const auto n = static_cast<size_t>(nb + r);
      sparse_panel_any<Vec>(width, csr.code.data(), csr.ptr[n], csr.ptr[n + 1],
                            w.codebook.data(), xb, offset, nullptr, acc);
      finish_panel(acc, width, p0, nb + r, ep);
      std::copy(acc, acc + width, tile + r * kPanel);
    }
    for (int64_t i = 0; i < width; ++i) {
      float* yr = yb + i * pr.ys_p + nb * pr.ys_n;
      for (int64_t r = 0; r < rows; ++r) yr[r * pr.ys_n] = tile[r * kPanel + i];
    }
  }
}

template <typename Vec>
DC_ONNX_INLINE void kmajor_rows(const CodedRows& w, const KMajorProblem& pr, const Epilogue& ep,
                                int64_t b, int64_t p0, int64_t width, int64_t n0, int64_t n1) {
  const PanelRows& csr = w.panels();  // built before the tasks started (w_times_kmajor)
  if (csr.col32.empty())
    kmajor_rows<Vec>(w, csr, csr.col16.data(), pr, ep, b, p0, width, n0, n1);
  else
    kmajor_rows<Vec>(w, csr, csr.col32.data(), pr, ep, b, p0, width, n0, n1);
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

// Output rows split into tasks of about equal work (index slots and groups, not rows:
// row lengths vary), calling task(n0, n1) for each on the session's threads.
template <typename Task>
void balanced_rows(const Ort::KernelContext& ctx, const ClusterRows& w, int64_t columns,
                   Task&& task) {
  const int64_t n_out = w.rows;
  const double total = cluster_work(w, n_out) + static_cast<double>(n_out);
  const size_t tasks = task_count(n_out, total * static_cast<double>(columns) /
                                             static_cast<double>(n_out));
  std::vector<int64_t> bounds(tasks + 1, n_out);
  bounds[0] = 0;
  int64_t n = 0;
  for (size_t t = 1; t < tasks; ++t) {
    const double want = total * static_cast<double>(t) / static_cast<double>(tasks);
    while (n < n_out && cluster_work(w, n) + static_cast<double>(n) < want) ++n;
    bounds[t] = n;
  }
  parallel_for(ctx, tasks, [&](size_t t) {
    if (bounds[t] < bounds[t + 1]) task(bounds[t], bounds[t + 1]);
  });
}

// rows_times_w for few rows: the grouped form, parallel over output rows.
void cluster_rows_times_w(const Ort::KernelContext& ctx, const CodedRows& w, const float* a,
                          int64_t num_rows, float* y, const Epilogue& ep) {
  const ClusterRows& cw = w.clusters;
  const int64_t k = w.cols;
  const int64_t n_out = w.rows;
  // Per-Run buffers come from the session's arena (scratch.h): no allocation or page
  // fault of our own in a Run once the arena holds them.
  if (num_rows == 1) {
    // x padded with zeros: x[K] for the grouped form's empty lanes (and the overflow's),
    // up to whole 32-column blocks for the block form.
    const BlockRows& bw = w.blocks;
    const auto padded = static_cast<size_t>(bw.empty() ? k + 1 : bw.padded_cols());
    const Scratch x(ctx, padded);
    std::copy(a, a + k, x.data());
    std::fill(x.data() + k, x.data() + padded, 0.0f);
    if (bw.empty()) {
      balanced_rows(ctx, cw, 1, [&](int64_t n0, int64_t n1) {
        cluster_dots(cw, x.data(), n0, n1, y + n0);
        for (int64_t n = n0; n < n1; ++n) y[n] = finish(y[n], 0, n, ep);
      });
      return;
    }
    // Groups have equal work (R rounds per block) but for their overflow.
    const auto per_group = static_cast<double>(bw.blocks * bw.rounds * kBlockLanes);
    const size_t tasks = task_count(bw.groups, per_group);
    const int64_t per = (bw.groups + static_cast<int64_t>(tasks) - 1) / static_cast<int64_t>(tasks);
    parallel_for(ctx, tasks, [&](size_t t) {
      const int64_t g0 = static_cast<int64_t>(t) * per;
      const int64_t g1 = std::min(bw.groups, g0 + per);
      if (g0 >= g1) return;
      block_dots(bw, x.data(), g0, g1, y + g0 * kBlockLanes);
      for (int64_t n = g0 * kBlockLanes; n < std::min(n_out, g1 * kBlockLanes); ++n)
        y[n] = finish(y[n], 0, n, ep);
    });
    return;
  }
  // K-major blocks of `width` vectors, each with a zero row K: xk[b][j][c].
  const int64_t width = cluster_width();
  const int64_t blocks = (num_rows + width - 1) / width;
  const int64_t block_size = (k + 1) * width;
  const Scratch xk(ctx, static_cast<size_t>(blocks * block_size));
  std::fill(xk.data(), xk.data() + blocks * block_size, 0.0f);
  for (int64_t m = 0; m < num_rows; ++m) {
    float* dst = xk.data() + (m / width) * block_size + m % width;
    for (int64_t j = 0; j < k; ++j) dst[j * width] = a[m * k + j];
  }
  const Scratch out(ctx, static_cast<size_t>(n_out * width));  // tasks own rows [n0, n1)
  balanced_rows(ctx, cw, num_rows, [&](int64_t n0, int64_t n1) {
    float* o = out.data() + n0 * width;
    for (int64_t b = 0; b < blocks; ++b) {
      cluster_columns(cw, xk.data() + b * block_size, n0, n1, o);
      for (int64_t c = 0; c < width && b * width + c < num_rows; ++c) {
        const int64_t m = b * width + c;
        for (int64_t n = n0; n < n1; ++n)
          y[m * n_out + n] = finish(o[(n - n0) * width + c], m, n, ep);
      }
    }
  });
}

}  // namespace

struct CodedRows::Lazy {
  std::once_flag once;
  PanelRows csr;
};

std::shared_ptr<CodedRows::Lazy> CodedRows::make_lazy() { return std::make_shared<Lazy>(); }

namespace {

// The CSR of `w` from its grouped form: each row's entries in column order (as decoded),
// each lane's codebook value mapped back to a code. A value the codebook holds twice maps
// to its first code: the panels multiply by the same float, so the bits do not change.
// The row's codes are scattered into a dense row and read back in column order, 8 columns
// per test (a sort per row, or a branch per column, took several times as long). Paid
// once per session, by its first Run of 9+ rows.
PanelRows csr_from_clusters(const CodedRows& w) {
  // Value bits to first code: open addressing, 4 slots per code (a search over the
  // sorted codebook mispredicted a branch per step).
  constexpr size_t kSlots = 1024;
  const auto hash = [](uint32_t bits) { return (bits * 0x9E3779B1u) >> 22; };  // 10 bits
  std::array<uint32_t, kSlots> key{};
  std::array<uint8_t, kSlots> code_at{};  // 0: an empty slot
  for (size_t k = 1; k < w.codebook.size(); ++k) {
    uint32_t bits = 0;
    std::memcpy(&bits, &w.codebook[k], sizeof bits);
    size_t at = hash(bits);
    while (code_at[at] != 0 && key[at] != bits) at = (at + 1) % kSlots;
    if (code_at[at] == 0) {
      key[at] = bits;
      code_at[at] = static_cast<uint8_t>(k);
    }
  }
  const auto code_for = [&](float value) {
    uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    size_t at = hash(bits);
    while (key[at] != bits || code_at[at] == 0) at = (at + 1) % kSlots;  // value is there
    return code_at[at];
  };
  const ClusterRows& cw = w.clusters;
  const auto cols = static_cast<size_t>(w.cols);
  const size_t words = (cols + 7) / 8;
  std::vector<uint64_t> dense(words, 0);  // row n's code per column, 8 to a word
  auto* dense_bytes = reinterpret_cast<uint8_t*>(dense.data());
  PanelRows csr;
  csr.ptr.reserve(static_cast<size_t>(w.rows) + 1);
  csr.ptr.push_back(0);
  const bool wide = w.cols > 65536;
  const size_t slots = cw.idx16.size() + cw.idx32.size();  // >= non-zeros
  csr.code.reserve(slots);
  csr.col16.reserve(wide ? 0 : slots);
  csr.col32.reserve(wide ? slots : 0);
  for (int64_t n = 0; n < w.rows; ++n) {
    for_each_entry(cw, n, [&](uint32_t j, float value) { dense_bytes[j] = code_for(value); });
    constexpr uint64_t kLow7 = 0x7F7F7F7F7F7F7F7FULL;
    for (size_t i = 0; i < words; ++i) {
      uint64_t v = dense[i];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      v = __builtin_bswap64(v);  // byte j of the word at bit 8j
#endif
      // The top bit of each non-zero byte (no branch per byte: they would mispredict).
      uint64_t present = (((v & kLow7) + kLow7) | v) & ~kLow7;
      for (; present != 0; present &= present - 1) {
        const size_t j = 8 * i + static_cast<size_t>(__builtin_ctzll(present)) / 8;
        csr.code.push_back(dense_bytes[j]);
        if (wide)
          csr.col32.push_back(static_cast<uint32_t>(j));
        else
          csr.col16.push_back(static_cast<uint16_t>(j));  // j < cols <= 65536
      }
      dense[i] = 0;
    }
    csr.ptr.push_back(csr.code.size());
  }
  return csr;  // capacity: the slots, 2-7% above the non-zeros, never touched
}

}  // namespace

const PanelRows& CodedRows::panels() const {
  std::call_once(lazy_->once, [this] { lazy_->csr = csr_from_clusters(*this); });
  return lazy_->csr;
}

CodedRows pack_rows(const CsrMatrix& m) {
  CodedRows w;
  w.rows = m.rows;
  w.cols = m.cols;
  w.codebook = m.codebook;
  w.row_scale = m.row_scale;
  w.clusters = pack_clusters(m);
  w.blocks = pack_blocks(m);
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
  if (num_rows <= kClusterRowsMax) {
    cluster_rows_times_w(ctx, w, a, num_rows, y, ep);
    if (any_non_finite(a, static_cast<size_t>(num_rows * w.cols)))  // IEEE: non_finite.h
      for (int64_t m = 0; m < num_rows; ++m)
        nan_through_absent(w.clusters, a + m * w.cols, 1, y + m * w.rows, 1);
    return;
  }
  const KMajorCopy x(ctx, a, 1, w.cols, num_rows, 0, 1, w.cols);
  const KMajorProblem pr{x.data(), x.ldx(), 0, num_rows, 1, y, 1, w.rows, 0};
  w_times_kmajor(ctx, w, pr, ep);
}

void w_times_kmajor(const Ort::KernelContext& ctx, const CodedRows& w, const KMajorProblem& pr,
                    const Epilogue& given) {
  const Epilogue ep = scaled(w, given);
  const int64_t n_out = w.rows;
  if (pr.batches == 0 || pr.p == 0 || n_out == 0) return;
  const int64_t p_blocks = (pr.p + kPanel - 1) / kPanel;
  const int64_t cells = pr.batches * p_blocks;  // independent (batch, column block) pairs
  const PanelRows& csr = w.panels();  // built here, not inside a task (it may throw)
  const double nnz_per_row =
      static_cast<double>(csr.code.size()) / static_cast<double>(n_out) + 1.0;
  const double block_width = static_cast<double>(std::min(pr.p, kPanel));
  // Tasks = (batch, column block) cells x chunks of output rows. A unit here (a non-zero
  // times a column) is a sixteenth of a vector product, so tasks take 2^19 of them, about
  // 25 us on AVX-512: with task_count's default (1.5 us) the 4096 x 4096 layer at batch 64
  // ran as 1024 tasks, and two threads spent 10% of the Run on their hand-offs.
  constexpr double kUnitsPerTask = 524288.0;
  const size_t want = task_count(cells * n_out, nnz_per_row * block_width, kUnitsPerTask);
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
      nan_through_absent(w.clusters, xb + p, pr.ldx, pr.y + b * pr.y_bs + p * pr.ys_p, pr.ys_n);
  }
}

namespace {

#ifdef DC_ONNX_X86
// out[k * ldx + p] = a[p * a_sp + k] for an 8 x 8 block: rows of A in, K rows out.
DC_ONNX_TARGET_AVX2 DC_ONNX_INLINE void transpose8(const float* a, int64_t a_sp, float* out,
                                                   int64_t ldx) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(a + i * a_sp);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      r[i + j] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[i + j + 2] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  // r[0..3] hold columns 0, 1, 2, 3 of rows 0-3 / 4-7 in their 128-bit halves, r[4..7]
  // the same for the other four rows: one more exchange of halves gives the columns.
  static constexpr int kCol[8] = {0, 2, 1, 3, 0, 2, 1, 3};
  for (int c = 0; c < 8; ++c) {
    const __m256 lo = r[kCol[c]];
    const __m256 hi = r[kCol[c] + 4];
    _mm256_storeu_ps(out + c * ldx, c < 4 ? _mm256_permute2f128_ps(lo, hi, 0x20)
                                          : _mm256_permute2f128_ps(lo, hi, 0x31));
  }
}

// The K-major copy when K is contiguous in A (a_sk == 1): 8 x 8 blocks in registers
// (a scalar transpose took about 1 ns per element: most of a 2048-row MatMul's Run at
// 20% density), the ragged edges element by element.
DC_ONNX_TARGET_AVX2 void transpose_rows_avx2(const float* a, int64_t k, int64_t p, int64_t a_sp,
                                             float* out, int64_t ldx) {
  const int64_t k8 = k / 8 * 8;
  const int64_t p8 = p / 8 * 8;
  for (int64_t p0 = 0; p0 < p8; p0 += 8)
    for (int64_t k0 = 0; k0 < k8; k0 += 8)
      transpose8(a + p0 * a_sp + k0, a_sp, out + k0 * ldx + p0, ldx);
  for (int64_t pi = 0; pi < p; ++pi)
    for (int64_t ki = pi < p8 ? k8 : 0; ki < k; ++ki) out[ki * ldx + pi] = a[pi * a_sp + ki];
}
#endif

// P rounded up to 16 floats (64-byte lines); rows wider than one panel (4 lines) then to
// an odd number of lines. With an even count (P = 512, 1024, 2048 ...) the 4 lines a
// panel reads from each K row fall into a few cache sets and evict each other: a
// 2048-row MatMul ran 6x slower than one of 2000 rows. Narrower rows are read whole.
int64_t kmajor_ld(int64_t p) {
  const int64_t lines = checked_add(p, 15, "K-major copy width") / 16;
  const int64_t odd = lines > kPanel / 16 && lines % 2 == 0 ? lines + 1 : lines;
  return checked_mul(odd, 16, "K-major copy width");
}

size_t kmajor_floats(int64_t batches, int64_t k, int64_t p) {
  return static_cast<size_t>(checked_mul(checked_mul(batches, k, "K-major copy"),
                                         kmajor_ld(p), "K-major copy"));
}

}  // namespace

KMajorCopy::KMajorCopy(const Ort::KernelContext& ctx, const float* a, int64_t batches,
                       int64_t k, int64_t p, int64_t a_bs, int64_t a_sk, int64_t a_sp)
    : ldx_(kmajor_ld(p)), block_(ctx, kmajor_floats(batches, k, p)) {
  float* out = block_.data();
  const int64_t ldx = ldx_;
  // K rows [k0, k1) of batch b: copies of 1 MiB and more in tasks of about 512 KiB on the
  // session's threads (at batch 64 of a 4096-wide layer, one thread's copy was 6% of a
  // two-thread Run); smaller ones would gain less than waking a thread costs (~16 us).
  const auto copy_rows = [=](int64_t b, int64_t k0, int64_t k1) {
    const float* ab = a + b * a_bs + k0 * a_sk;
    float* ob = out + (b * k + k0) * ldx;
    const int64_t rows = k1 - k0;
    if (ldx > p)  // only the padding columns: every other element is written below
      for (int64_t row = 0; row < rows; ++row)
        std::fill(ob + row * ldx + p, ob + (row + 1) * ldx, 0.0f);
    if (a_sp == 1) {  // already K-major: only the padding changes
      for (int64_t ki = 0; ki < rows; ++ki)
        std::copy(ab + ki * a_sk, ab + ki * a_sk + p, ob + ki * ldx);
      return;
    }
#ifdef DC_ONNX_X86
    if (a_sk == 1 && isa() >= Isa::kAvx2) return transpose_rows_avx2(ab, rows, p, a_sp, ob, ldx);
#endif
    constexpr int64_t kTile = 32;  // tiles keep both sides cache-friendly when transposing
    for (int64_t r0 = 0; r0 < rows; r0 += kTile)
      for (int64_t p0 = 0; p0 < p; p0 += kTile)
        for (int64_t pi = p0; pi < std::min(p, p0 + kTile); ++pi)
          for (int64_t ki = r0; ki < std::min(rows, r0 + kTile); ++ki)
            ob[ki * ldx + pi] = ab[ki * a_sk + pi * a_sp];
  };
  const size_t per_batch = task_count(k, static_cast<double>(ldx), 131072.0);
  if (per_batch == 0) return;
  // Whole 8-row blocks per chunk: only the last one has a ragged edge for the transpose.
  const int64_t chunk = (k / static_cast<int64_t>(per_batch) + 7) / 8 * 8;
  const int64_t chunks = (k + chunk - 1) / chunk;
  parallel_for(ctx, static_cast<size_t>(batches * chunks), [&](size_t t) {
    const int64_t b = static_cast<int64_t>(t) / chunks;
    const int64_t k0 = (static_cast<int64_t>(t) % chunks) * chunk;
    copy_rows(b, k0, std::min(k, k0 + chunk));
  });
}

}  // namespace dc_onnx
