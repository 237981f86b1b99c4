// The inner loop shared by the batched Gemm/MatMul path and the convolution: one sparse
// weight row times a dense panel of 16*V contiguous floats per non-zero,
//   out[0 .. 16V) = sum_j codebook[code[j]] * x[offset(j) .. offset(j) + 16V).
// The accumulators live in registers (GCC vector types, lowered to whatever width the
// enclosing DC_ONNX_HOT clone targets), so each non-zero costs one codebook look-up, V
// loads, V multiplies and V adds; no accumulator goes through memory. Narrow panels
// (V = 1, 2) spread consecutive non-zeros over U = 4/V accumulator sets to hide add latency.
// Which set a non-zero goes to depends only on its position in the row, so results do
// not depend on threads or on the CPU; with one non-zero product (identity input) the
// sum is that product exactly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dc_onnx {

using Vec16 = float __attribute__((vector_size(64)));

#define DC_ONNX_INLINE inline __attribute__((always_inline))

// acc += w * p[0..16). Vectors pass by reference only: by value they would change the
// calling convention between the clones (GCC's -Wpsabi).
DC_ONNX_INLINE void axpy16(Vec16& acc, float w, const float* p) {
  Vec16 v;
  __builtin_memcpy(&v, p, sizeof v);
  acc += w * v;
}

// Non-zeros [b, e) of one row; `offset(j)` gives the panel start in x for non-zero j.
// The sums start from `init[0 .. 16V)` (partial sums of earlier non-zeros; may be `out`)
// or from zero when `init` is null.
template <size_t V, typename Offset>
DC_ONNX_INLINE void sparse_panel(const uint8_t* code, size_t b, size_t e, const float* codebook,
                                 const float* x, Offset offset, const float* init, float* out) {
  constexpr size_t U = V >= 3 ? 1 : 4 / V;
  Vec16 acc[U][V];
  for (size_t u = 0; u < U; ++u)
    for (size_t i = 0; i < V; ++i) acc[u][i] = Vec16{};
  if (init != nullptr)
    for (size_t i = 0; i < V; ++i) __builtin_memcpy(&acc[0][i], init + 16 * i, sizeof(Vec16));
  size_t j = b;
  for (; j + U <= e; j += U)
    for (size_t u = 0; u < U; ++u) {
      const float w = codebook[code[j + u]];
      const float* p = x + offset(j + u);
      for (size_t i = 0; i < V; ++i) axpy16(acc[u][i], w, p + 16 * i);
    }
  for (size_t u = 0; j < e; ++j, ++u) {
    const float w = codebook[code[j]];
    const float* p = x + offset(j);
    for (size_t i = 0; i < V; ++i) axpy16(acc[u][i], w, p + 16 * i);
  }
  for (size_t half = U / 2; half > 0; half /= 2)
    for (size_t u = 0; u < half; ++u)
      for (size_t i = 0; i < V; ++i) acc[u][i] += acc[u + half][i];
  for (size_t i = 0; i < V; ++i) __builtin_memcpy(out + 16 * i, &acc[0][i], sizeof(Vec16));
}

// Calls sparse_panel with the smallest V whose panel covers `width` (<= 16 * kMaxV).
template <typename Offset>
DC_ONNX_INLINE void sparse_panel_any(int64_t width, const uint8_t* code, size_t b, size_t e,
                                     const float* codebook, const float* x, Offset offset,
                                     const float* init, float* out) {
  switch ((width + 15) / 16) {
    case 1: return sparse_panel<1>(code, b, e, codebook, x, offset, init, out);
    case 2: return sparse_panel<2>(code, b, e, codebook, x, offset, init, out);
    case 3: return sparse_panel<3>(code, b, e, codebook, x, offset, init, out);
    case 4: return sparse_panel<4>(code, b, e, codebook, x, offset, init, out);
    case 5: return sparse_panel<5>(code, b, e, codebook, x, offset, init, out);
    case 6: return sparse_panel<6>(code, b, e, codebook, x, offset, init, out);
    case 7: return sparse_panel<7>(code, b, e, codebook, x, offset, init, out);
    default: return sparse_panel<8>(code, b, e, codebook, x, offset, init, out);
  }
}

constexpr size_t kMaxV = 8;     // widest panel: 8 vectors of 16 floats (8 of 32 zmm registers)
constexpr int64_t kPanel = 64;  // Gemm/MatMul panel width (batch 64 is one panel)

}  // namespace dc_onnx
