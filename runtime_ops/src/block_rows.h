// The batch-1 Gemm/MatMul form for weights of 6-15% density with up to 32 codes: the
// activations are looked up from registers instead of gathered from memory.
//
// Layout. Output rows in groups of 16 (one lane each), columns in blocks of 32. For each
// group and block, R rounds (R = 1..4, one value for the whole weight) of 16 entries:
// lane l of round r holds the r-th stored weight of row 16g + l in that block, if it has
// one, as (column in block) | code << 5, and a 16-bit mask marks the lanes that hold
// one. A block's 32 activations and the <= 32 codebook values sit in two registers each,
// so a round is two permutes, a product and an add for 16 weights. The weights past R
// in a (row, block) are the "overflow", kept in the grouped form (cluster_rows.h).
//
// Where. Only the AVX-512 loop is fast (two-register permutes; an AVX2 version ran 2.2x
// slower than the grouped form's AVX2 loop), so the form is used on AVX-512 paths
// (simd.h isa()), unless DC_ONNX_BLOCK_ROWS says otherwise: "0" never, any other value
// wherever a weight qualifies, on any path (the scalar loop gives the same bits; tests
// use it). A layer's batch-1 bits therefore depend on the form: docs/format.md.
//
// Sum (the same bits on every ISA path and thread count; docs/format.md): per row, four
// sums a[0..4) start at +0; for each block in column order and each round r < R with a
// weight: a[r] = a[r] + codebook[code] * x[column]; then
//   y = ((a0 + a1) + (a2 + a3)) + (the overflow's grouped-form sum, +0 when it has none).
// Each product and sum rounded to float32 (no FMA).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cluster_rows.h"
#include "sparse_weight.h"

namespace dc_onnx {

constexpr int64_t kBlockLanes = 16;  // output rows per group
constexpr int64_t kBlockCols = 32;   // columns per block: one two-register permute
constexpr int64_t kMaxRounds = 4;

struct BlockRows {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t groups = 0;                // ceil(rows / 16)
  int64_t blocks = 0;                // ceil(cols / 32)
  int64_t rounds = 0;                // R; 0: the weight does not use this form
  std::vector<uint16_t> entry;       // [group][block][round][lane]
  std::vector<uint16_t> mask;        // [group][block][round]: lanes holding a weight
  std::array<float, 32> value{};     // code -> codebook value
  ClusterRows overflow;              // the weights past R rounds, grouped by code

  bool empty() const { return rounds == 0; }
  // Floats the activation vector must be padded to (zeros past cols).
  int64_t padded_cols() const { return blocks * kBlockCols + 1; }
};

// Whether weights may take the block form: on the AVX-512 path, or as DC_ONNX_BLOCK_ROWS
// says (read once).
bool block_rows_enabled();

// The block form of `m` when enabled and expected to beat the grouped form (few codes, a
// density where most of a block's rows hold 1-4 weights); otherwise an empty one.
BlockRows pack_blocks(const CsrMatrix& m);

// Rows [16 * g0, min(rows, 16 * g1)) for one activation vector x[0 .. padded_cols()),
// zero past cols: out[n - 16 * g0].
void block_dots(const BlockRows& w, const float* x, int64_t g0, int64_t g1, float* out);

}  // namespace dc_onnx
