// The batch-1 inner loop: one sparse weight row (column indices + one-byte codebook
// indices) dotted with a dense vector. Sixteen partial sums, non-zero j feeding sum
// j mod 16, then added pairwise (s[l] += s[l + 8], + 4, + 2, + 1): the scalar version
// and the AVX-512 version (gathers, codebook of up to 32 entries held in two registers)
// give the same bits, so results do not depend on the CPU. CPUs with AVX2 but no
// AVX-512 run the scalar version (see sparse_matmul.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "simd.h"

#ifdef DC_ONNX_X86
#include <immintrin.h>
#define DC_ONNX_AVX512_DOT 1
#endif

namespace dc_onnx {

constexpr size_t kDotLanes = 16;

// Adds non-zeros [j, nnz) to the lanes, then folds the lanes into one sum.
template <typename Index>
inline float finish_dot(float* s, size_t j, const Index* col, const uint8_t* code, size_t nnz,
                        const float* codebook, const float* x) {
  for (size_t l = 0; j + l < nnz; ++l) s[l] += codebook[code[j + l]] * x[col[j + l]];
  for (size_t half = kDotLanes / 2; half > 0; half /= 2)
    for (size_t l = 0; l < half; ++l) s[l] += s[l + half];
  return s[0];
}

template <typename Index>
inline float sparse_dot_scalar(const Index* col, const uint8_t* code, size_t nnz,
                               const float* codebook, const float* x) {
  float s[kDotLanes] = {};
  size_t j = 0;
  for (; j + kDotLanes <= nnz; j += kDotLanes)
    for (size_t l = 0; l < kDotLanes; ++l) s[l] += codebook[code[j + l]] * x[col[j + l]];
  return finish_dot(s, j, col, code, nnz, codebook, x);
}

#ifdef DC_ONNX_AVX512_DOT
// GCC 12 reports the undefined upper halves inside its own cast/extract intrinsics as
// (maybe-)uninitialized; they are fully written before use.
#pragma GCC diagnostic push
#ifndef __clang__  // clang has no such warning (the fuzz targets build with clang)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

// Non-zeros [j, j + 16) under `mask` added to their lanes; masked-off lanes unchanged.
template <typename Index>
DC_ONNX_TARGET_AVX512 inline __m512 add_lanes16(
    __m512 acc, __mmask16 mask, const Index* col, const uint8_t* code, size_t j,
    const float* codebook, __m512 cb_lo, __m512 cb_hi, const float* x, bool small_codebook) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i codes = _mm512_maskz_cvtepu8_epi32(mask, _mm_maskz_loadu_epi8(mask, code + j));
  __m512i cols;
  if constexpr (sizeof(Index) == 2)
    cols = _mm512_maskz_cvtepu16_epi32(mask, _mm256_maskz_loadu_epi16(mask, col + j));
  else
    cols = _mm512_maskz_loadu_epi32(mask, col + j);
  const __m512 w = small_codebook ? _mm512_permutex2var_ps(cb_lo, codes, cb_hi)
                                  : _mm512_mask_i32gather_ps(zero, mask, codes, codebook, 4);
  // Two 8-wide gathers: on AMD Zen 4 they retire faster than one 16-wide gather.
  const __m256 none = _mm256_setzero_ps();
  const auto lo_mask = static_cast<__mmask8>(mask & 0xFF);
  const auto hi_mask = static_cast<__mmask8>(mask >> 8);
  const __m256 x_lo = _mm256_mmask_i32gather_ps(none, lo_mask, _mm512_castsi512_si256(cols), x, 4);
  const __m256 x_hi = _mm256_mmask_i32gather_ps(
      none, hi_mask, _mm512_maskz_extracti64x4_epi64(0xFF, cols, 1), x, 4);
  const __m512 xs = _mm512_insertf32x8(_mm512_zextps256_ps512(x_lo), x_hi, 1);
  return _mm512_mask_add_ps(acc, mask, acc, _mm512_mul_ps(w, xs));
}

// `small_codebook`: codebook[0..32) are all the entries (the rest of the 256 are zero).
// The tail runs masked and the lanes fold in registers, in sparse_dot_scalar's order.
template <typename Index>
DC_ONNX_TARGET_AVX512 inline float sparse_dot_avx512(
    const Index* col, const uint8_t* code, size_t nnz, const float* codebook, const float* x,
    bool small_codebook) {
  const __m512 cb_lo = _mm512_loadu_ps(codebook);
  const __m512 cb_hi = _mm512_loadu_ps(codebook + 16);
  __m512 acc = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + kDotLanes <= nnz; j += kDotLanes)
    acc = add_lanes16(acc, 0xFFFF, col, code, j, codebook, cb_lo, cb_hi, x, small_codebook);
  if (j < nnz) {
    const auto mask = static_cast<__mmask16>((1u << (nnz - j)) - 1);
    acc = add_lanes16(acc, mask, col, code, j, codebook, cb_lo, cb_hi, x, small_codebook);
  }
  // s[l] += s[l + 8], then + 4, + 2, + 1 (addition is commutative, so these are the
  // scalar fold's exact operations).
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
  const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
  const __m128 a1 = _mm_add_ss(a2, _mm_shuffle_ps(a2, a2, 1));
  return _mm_cvtss_f32(a1);
}

// Rows [n0, n1) of a CSR matrix (offsets `ptr`) into out[0 .. n1 - n0): one call per
// block of rows, so the codebook registers and the call cost are paid once.
template <typename Index>
DC_ONNX_TARGET_AVX512 void sparse_dots_avx512(
    const size_t* ptr, const Index* col, const uint8_t* code, const float* codebook,
    const float* x, bool small_codebook, int64_t n0, int64_t n1, float* out) {
  for (int64_t n = n0; n < n1; ++n) {
    const size_t b = ptr[n];
    out[n - n0] = sparse_dot_avx512(col + b, code + b, ptr[n + 1] - b, codebook, x, small_codebook);
  }
}

#pragma GCC diagnostic pop

#endif

}  // namespace dc_onnx
