// The inner loop shared by the batched Gemm/MatMul path and the convolution: one sparse
// weight row times a dense panel of 16*V contiguous floats per non-zero,
//   out[0 .. 16V) = sum_j codebook[code[j]] * x[offset(j) .. offset(j) + 16V).
// The accumulators live in registers as native vectors of L floats (16: AVX-512, 8: AVX2,
// 4: SSE2), so each non-zero costs one codebook look-up, then per vector one load, one
// multiply and one add; no accumulator goes through memory. A vector type wider than the
// ISA's registers would not: GCC keeps it on the stack and splits every operation
// (10x slower), which is why L follows the ISA of the calling function (isa.h).
//
// The bits do not depend on L. Narrow panels (V = 1, 2) spread consecutive non-zeros over
// U = 4/V accumulator sets to hide add latency; which set a non-zero goes to depends only
// on its position in the row, and the sets are folded in a fixed order. When U sets of a
// panel's vectors would not fit in R registers, the panel is done in column chunks, each
// over all the non-zeros; every float still sees the same additions in the same order.
// With one non-zero product (identity input) the sum is that product exactly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dc_onnx {

#define DC_ONNX_INLINE inline __attribute__((always_inline))

// A native vector of L floats (an alias template would drop the attribute).
template <size_t L>
struct Lanes {
  typedef float type __attribute__((vector_size(4 * L)));
};

// acc += w * p[0..L). Vectors pass by reference only: by value they would change the
// calling convention between ISAs (GCC's -Wpsabi).
template <size_t L>
DC_ONNX_INLINE void axpy(typename Lanes<L>::type& acc, float w, const float* p) {
  typename Lanes<L>::type v;
  __builtin_memcpy(&v, p, sizeof v);
  acc += w * v;
}

// Columns [0, C*L) of x + offset(j), init and out: U accumulator sets of C vectors.
template <size_t L, size_t U, size_t C, typename Offset>
DC_ONNX_INLINE void panel_chunk(const uint8_t* code, size_t b, size_t e, const float* codebook,
                                const float* x, Offset offset, const float* init, float* out) {
  using Vec = typename Lanes<L>::type;
  Vec acc[U][C];
  for (size_t u = 0; u < U; ++u)
    for (size_t i = 0; i < C; ++i) acc[u][i] = Vec{};
  if (init != nullptr)
    for (size_t i = 0; i < C; ++i) __builtin_memcpy(&acc[0][i], init + L * i, sizeof(Vec));
  size_t j = b;
  for (; j + U <= e; j += U)
    for (size_t u = 0; u < U; ++u) {
      const float w = codebook[code[j + u]];
      const float* p = x + offset(j + u);
      for (size_t i = 0; i < C; ++i) axpy<L>(acc[u][i], w, p + L * i);
    }
  for (size_t u = 0; j < e; ++j, ++u) {
    const float w = codebook[code[j]];
    const float* p = x + offset(j);
    for (size_t i = 0; i < C; ++i) axpy<L>(acc[u][i], w, p + L * i);
  }
  for (size_t half = U / 2; half > 0; half /= 2)
    for (size_t u = 0; u < half; ++u)
      for (size_t i = 0; i < C; ++i) acc[u][i] += acc[u + half][i];
  for (size_t i = 0; i < C; ++i) __builtin_memcpy(out + L * i, &acc[0][i], sizeof(Vec));
}

// Non-zeros [b, e) of one row; `offset(j)` gives the panel start in x for non-zero j.
// The sums start from `init[0 .. 16V)` (partial sums of earlier non-zeros; may be `out`)
// or from zero when `init` is null. L floats per vector, at most R accumulator vectors.
template <size_t L, size_t R, size_t V, typename Offset>
DC_ONNX_INLINE void sparse_panel(const uint8_t* code, size_t b, size_t e, const float* codebook,
                                 const float* x, Offset offset, const float* init, float* out) {
  static_assert(16 % L == 0 && R >= 4, "L must divide 16; R must hold U = 4 sets");
  constexpr size_t U = V >= 3 ? 1 : 4 / V;
  constexpr size_t T = 16 * V / L;  // vectors across the panel
  constexpr size_t C = T < R / U ? T : R / U;
  size_t c = 0;
  for (; c + C <= T; c += C)
    panel_chunk<L, U, C>(code, b, e, codebook, x + c * L, offset,
                         init != nullptr ? init + c * L : nullptr, out + c * L);
  if constexpr (T % C != 0)
    panel_chunk<L, U, T % C>(code, b, e, codebook, x + c * L, offset,
                             init != nullptr ? init + c * L : nullptr, out + c * L);
}

// Calls sparse_panel with the smallest V whose panel covers `width` (<= 16 * kMaxV).
// The defaults (AVX-512 vectors, 8 accumulators) suit callers built for AVX-512 only.
template <size_t L = 16, size_t R = 8, typename Offset>
DC_ONNX_INLINE void sparse_panel_any(int64_t width, const uint8_t* code, size_t b, size_t e,
                                     const float* codebook, const float* x, Offset offset,
                                     const float* init, float* out) {
  switch ((width + 15) / 16) {
    case 1: return sparse_panel<L, R, 1>(code, b, e, codebook, x, offset, init, out);
    case 2: return sparse_panel<L, R, 2>(code, b, e, codebook, x, offset, init, out);
    case 3: return sparse_panel<L, R, 3>(code, b, e, codebook, x, offset, init, out);
    case 4: return sparse_panel<L, R, 4>(code, b, e, codebook, x, offset, init, out);
    case 5: return sparse_panel<L, R, 5>(code, b, e, codebook, x, offset, init, out);
    case 6: return sparse_panel<L, R, 6>(code, b, e, codebook, x, offset, init, out);
    case 7: return sparse_panel<L, R, 7>(code, b, e, codebook, x, offset, init, out);
    default: return sparse_panel<L, R, 8>(code, b, e, codebook, x, offset, init, out);
  }
}

constexpr size_t kMaxV = 8;     // widest panel: 8 vectors of 16 floats (8 of 32 zmm registers)
constexpr int64_t kPanel = 64;  // Gemm/MatMul panel width (batch 64 is one panel)

}  // namespace dc_onnx
