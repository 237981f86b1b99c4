// IEEE results for non-finite inputs. A sparse kernel never multiplies by the weights it
// does not store (pruned, or clustered to exactly zero), but the dense op it replaces
// does, and 0 * NaN = 0 * Inf = NaN. So every Run first scans its input (one pass with
// no branch per element, small next to the products); only when that finds a NaN or an
// Inf do the functions below set to NaN each output that such an input reaches through
// an absent weight. Products with stored weights follow IEEE rules by themselves (v * Inf
// = +-Inf, Inf - Inf = NaN, v * NaN = NaN), so with these the compiled layer gives the
// dense layer's non-finite outputs exactly, and finite inputs take the fast path as before.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cluster_rows.h"
#include "conv_attributes.h"
#include "sparse_conv.h"
#include "sparse_matmul.h"

namespace dc_onnx {

// True when x[0 .. count) holds a NaN or an infinity.
bool any_non_finite(const float* x, size_t count);

// Gemm/MatMul, one activation vector: x[j * x_stride] for j < W.cols fed the outputs
// y[n * y_stride] for n < W.rows. Sets y[n] to NaN when x[j] is not finite and W[n, j]
// is absent. Cost: one pass over x, then one over W's grouped non-zeros.
void nan_through_absent(const ClusterRows& w, const float* x, int64_t x_stride, float* y,
                        int64_t y_stride);

// Conv, one image: `x` [channels, in_h, in_w] fed `y` [M, out_h, out_w] with the
// attributes `a` and the geometry of `pr` (pads resolved). Sets to NaN every output that
// a non-finite input reaches through an absent tap. Cost: a pass over x, then per group
// of channels outputs * (kh + kw), and per output channel its stored taps * outputs (the
// order of the sparse conv itself), skipping channels without NaN or Inf.
void conv_nan_through_absent(const ConvTaps& w, const ConvAttributes& a, const ConvProblem& pr,
                             const float* x, float* y);

}  // namespace dc_onnx
