// The few-rows Gemm/MatMul form: each weight row's non-zeros grouped by codebook index
// (the paper's weight sharing), so the inner loop only adds activations and multiplies
// once per group of them:
//   y = sum over clusters k of codebook[k] * (sum of x[j] over the row's j with code k).
//
// Layout. A row's entries of one code are cut into pieces of 8 and the binary digits of
// the remainder (8a + 4b + 2c + d): pieces of 8, 4, 2 and 1 entries. The pieces of one
// size form groups of 8 lanes (one piece per lane; lanes left over in a row's last group
// of a size are empty: code 0, every index K, which reads a zero). A group of size R
// holds R rounds of 8 column indices, round-major, so its loop is R rounds of 8
// independent adds, with no multiply and no codebook look-up per non-zero. Groups run
// by size (8, 4, 2, 1), pieces within a size by code, then column.
//
// Sum (the same bits on every ISA path, batch size and thread count; docs/format.md):
// eight lane sums a[0..8) start at +0; per group, each lane's s = (((+0 + x1) + x2) + ...
// + xR) over its piece, then a[l] = a[l] + codebook[code_l] * s; at the row's end
// a[l] += a[l + 4], a[l] += a[l + 2], y = a[0] + a[1]. Each product and sum is rounded to
// float32 (no FMA). Empty lanes add codebook[0] * 0 = +0, which changes no sum.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparse_weight.h"

namespace dc_onnx {

constexpr size_t kGroupLanes = 8;  // pieces per group: 8 independent add chains

struct ClusterRows {
  int64_t rows = 0;
  int64_t cols = 0;                // K; index K reads the zero after the activations
  std::vector<size_t> row_group;   // rows + 1: row n's groups are [row_group[n], row_group[n+1])
  std::vector<size_t> row_slot;    // rows + 1: row n's first index in idx16/idx32
  std::vector<uint8_t> rounds;     // per group: its piece size R (1, 2, 4 or 8)
  std::vector<float> lane_weight;  // per group: 8 codebook values, 0 for an empty lane
  std::vector<uint16_t> idx16;     // column indices when cols < 65536 (K itself must fit)
  std::vector<uint32_t> idx32;     // otherwise
};
ClusterRows pack_clusters(const CsrMatrix& m);

// Work of rows [0, n) in index slots plus a per-group cost, for splitting rows into
// tasks of equal work.
double cluster_work(const ClusterRows& w, int64_t n);

// Rows [n0, n1) for one activation vector x[0 .. K] with x[K] == 0: out[n - n0].
void cluster_dots(const ClusterRows& w, const float* x, int64_t n0, int64_t n1, float* out);

// Rows [n0, n1) for `width` activation vectors held K-major, xk[j * width + c] for
// j <= K (row K all zeros), width = cluster_width(): out[(n - n0) * width + c]. Each
// column gets exactly the bits cluster_dots gives for that vector alone.
void cluster_columns(const ClusterRows& w, const float* xk, int64_t n0, int64_t n1, float* out);

// Calls f(column, codebook value) for each non-zero of row n (by size, code, column: the
// packing order, not column order).
template <typename F>
void for_each_entry(const ClusterRows& w, int64_t n, F&& f) {
  const auto walk = [&](const auto* idx) {
    const size_t slot0 = w.row_slot[static_cast<size_t>(n)];
    const size_t g1 = w.row_group[static_cast<size_t>(n) + 1];
    const auto* p = idx + slot0;
    for (size_t g = w.row_group[static_cast<size_t>(n)]; g < g1; ++g) {
      const float* c = w.lane_weight.data() + g * kGroupLanes;
      for (size_t r = 0; r < w.rounds[g]; ++r, p += kGroupLanes)
        for (size_t l = 0; l < kGroupLanes; ++l)
          if (c[l] != 0.0f) f(static_cast<uint32_t>(p[l]), c[l]);  // 0: an empty lane
    }
  };
  if (w.cols < 65536)
    walk(w.idx16.data());
  else
    walk(w.idx32.data());
}

// The number of activation vectors cluster_columns takes at once on this CPU's path
// (8 with AVX2 or AVX-512, 4 on the baseline).
int64_t cluster_width();

}  // namespace dc_onnx
