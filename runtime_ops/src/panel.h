// The inner loop shared by the batched Gemm/MatMul path and the convolution: one sparse
// weight row times a dense panel of 16*V contiguous floats per non-zero,
//   out[0 .. 16V) = sum_j codebook[code[j]] * x[offset(j) .. offset(j) + 16V).
// The accumulators live in registers, so each non-zero costs one codebook look-up, V
// loads, V multiplies and V adds; no accumulator goes through memory. Narrow panels
// (V = 1, 2) spread consecutive non-zeros over U = 4/V accumulator sets to hide add latency.
// Which set a non-zero goes to depends only on V and its position in the row, so results
// do not depend on threads or on the CPU; with one non-zero product (identity input) the
// sum is that product exactly.
//
// `Vec` is the register type: 16 floats of a panel are 16/lanes(Vec) registers. It must
// be a width the enclosing function's target has registers for (Vec16 with AVX-512, Vec8
// with AVX2, Vec4 everywhere): GCC keeps a wider generic vector in memory, and the
// broadcast of each weight then goes through the stack (10x slower; simd.h dispatches).
// When U sets of a panel's registers would pass kAccumulators (a 128-wide conv panel is
// 16 ymm or 32 xmm registers), the panel is done in column chunks, each over all the
// non-zeros. Each output column is one lane whatever the width or the chunking, and sees
// the same additions in the same order, so every Vec gives the same bits.
//
// `Chain` (the convolution) keeps one accumulator set whatever V: each output is then
// one chain of multiply-adds over its non-zeros in order, so its bits do not depend on
// where a panel, chunk or input-channel block ends, and the caller may pick those per
// ISA. The FC panels keep U = 4/V sets for narrow panels (their latency hiding).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dc_onnx {

using Vec16 = float __attribute__((vector_size(64)));
using Vec8 = float __attribute__((vector_size(32)));
using Vec4 = float __attribute__((vector_size(16)));

#define DC_ONNX_INLINE inline __attribute__((always_inline))

// Accumulator registers per chunk (the default; a caller may ask for more): 8 of
// AVX-512's 32, or of AVX2's and SSE2's 16, leave room for the broadcast weight and the
// products. The conv loop on AVX2 takes 14: the broadcast weight and one product
// register besides them fill the 16 ymm registers (the input is read from memory).
constexpr size_t kAccumulators = 8;

// One unaligned load or store per register, straight between memory and the register (a
// memcpy of an array of vectors made GCC copy them through the stack in 16-byte pieces).
// Vectors pass by reference only: by value they would change the calling convention
// between targets (GCC's -Wpsabi).
template <typename Vec>
DC_ONNX_INLINE void load(Vec& v, const float* p) {
  typedef float Unaligned __attribute__((vector_size(sizeof(Vec)), aligned(4)));
  v = *reinterpret_cast<const Unaligned*>(p);
}

template <typename Vec>
DC_ONNX_INLINE void store(float* p, const Vec& v) {
  typedef float Unaligned __attribute__((vector_size(sizeof(Vec)), aligned(4)));
  *reinterpret_cast<Unaligned*>(p) = v;
}

// acc += w * p[0 .. lanes).
template <typename Vec>
DC_ONNX_INLINE void axpy(Vec& acc, const Vec& w, const float* p) {
  Vec v;
  load(v, p);
  acc += w * v;
}

// Columns [0, C*lanes) of x + offset(j), init and out: U accumulator sets of C registers.
template <size_t U, size_t C, typename Vec, typename Offset>
DC_ONNX_INLINE void panel_chunk(const uint8_t* code, size_t b, size_t e, const float* codebook,
                                const float* x, Offset offset, const float* init, float* out) {
  constexpr size_t kLanes = sizeof(Vec) / sizeof(float);
  Vec acc[U][C];
  for (size_t u = 0; u < U; ++u)
    for (size_t i = 0; i < C; ++i) acc[u][i] = Vec{};
  if (init != nullptr)
    for (size_t i = 0; i < C; ++i) load(acc[0][i], init + kLanes * i);
  size_t j = b;
  for (; j + U <= e; j += U)
    for (size_t u = 0; u < U; ++u) {
      const Vec w = codebook[code[j + u]] - Vec{};  // broadcast in a register
      const float* p = x + offset(j + u);
      for (size_t i = 0; i < C; ++i) axpy(acc[u][i], w, p + kLanes * i);
    }
  for (size_t u = 0; j < e; ++j, ++u) {
    const Vec w = codebook[code[j]] - Vec{};
    const float* p = x + offset(j);
    for (size_t i = 0; i < C; ++i) axpy(acc[u][i], w, p + kLanes * i);
  }
  for (size_t half = U / 2; half > 0; half /= 2)
    for (size_t u = 0; u < half; ++u)
      for (size_t i = 0; i < C; ++i) acc[u][i] += acc[u + half][i];
  for (size_t i = 0; i < C; ++i) store(out + kLanes * i, acc[0][i]);
}

// Non-zeros [b, e) of one row; `offset(j)` gives the panel start in x for non-zero j.
// The sums start from `init[0 .. 16V)` (partial sums of earlier non-zeros; may be `out`)
// or from zero when `init` is null.
template <size_t V, typename Vec = Vec16, bool Chain = false, size_t Acc = kAccumulators,
          typename Offset>
DC_ONNX_INLINE void sparse_panel(const uint8_t* code, size_t b, size_t e, const float* codebook,
                                 const float* x, Offset offset, const float* init, float* out) {
  // Depends on V only: the same sums on every Vec. Chain: one set, so each output is one
  // chain in non-zero order, whatever the panel, chunk or block boundaries.
  constexpr size_t U = Chain || V >= 3 ? 1 : 4 / V;
  constexpr size_t kLanes = sizeof(Vec) / sizeof(float);
  constexpr size_t T = 16 * V / kLanes;  // registers across the panel
  constexpr size_t C = T < Acc / U ? T : Acc / U;  // per chunk
  size_t c = 0;
  for (; c + C <= T; c += C)
    panel_chunk<U, C, Vec>(code, b, e, codebook, x + c * kLanes, offset,
                           init != nullptr ? init + c * kLanes : nullptr, out + c * kLanes);
  if constexpr (T % C != 0)
    panel_chunk<U, T % C, Vec>(code, b, e, codebook, x + c * kLanes, offset,
                               init != nullptr ? init + c * kLanes : nullptr, out + c * kLanes);
}

// Calls sparse_panel with the smallest V whose panel covers `width` (<= 16 * kMaxV).
template <typename Vec = Vec16, bool Chain = false, size_t Acc = kAccumulators, typename Offset>
DC_ONNX_INLINE void sparse_panel_any(int64_t width, const uint8_t* code, size_t b, size_t e,
                                     const float* codebook, const float* x, Offset offset,
                                     const float* init, float* out) {
  switch ((width + 15) / 16) {
    case 1: return sparse_panel<1, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    case 2: return sparse_panel<2, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    case 3: return sparse_panel<3, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    case 4: return sparse_panel<4, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    case 5: return sparse_panel<5, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    case 6: return sparse_panel<6, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    case 7: return sparse_panel<7, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
    default: return sparse_panel<8, Vec, Chain, Acc>(code, b, e, codebook, x, offset, init, out);
  }
}

constexpr size_t kMaxV = 8;     // widest panel: 8 vectors of 16 floats (8 of 32 zmm registers)
constexpr int64_t kPanel = 64;  // Gemm/MatMul panel width (batch 64 is one panel)

}  // namespace dc_onnx
