// The batch-1 inner loop: one sparse weight row (column indices + one-byte codebook
// indices) dotted with a dense vector. Sixteen partial sums, non-zero j feeding sum
// j mod 16, then added pairwise (s[l] += s[l + 8], + 4, + 2, + 1): the scalar version
// and the AVX-512 version (gathers, codebook of up to 32 entries held in two registers)
// give the same bits, so results do not depend on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#if defined(__GNUC__) && defined(__x86_64__)
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
// maybe-uninitialized; they are fully written before use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// `small_codebook`: codebook[0..32) are all the entries (the rest of the 256 are zero).
template <typename Index>
__attribute__((target("avx512f,avx512dq"))) inline float sparse_dot_avx512(
    const Index* col, const uint8_t* code, size_t nnz, const float* codebook, const float* x,
    bool small_codebook) {
  const __m512 cb_lo = _mm512_loadu_ps(codebook);
  const __m512 cb_hi = _mm512_loadu_ps(codebook + 16);
  // The masked forms with an explicit zero source: the plain intrinsics start from an
  // undefined register, which GCC 12 reports as maybe-uninitialized.
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 all = 0xFFFF;
  __m512 acc = zero;
  size_t j = 0;
  for (; j + kDotLanes <= nnz; j += kDotLanes) {
    const __m512i codes = _mm512_maskz_cvtepu8_epi32(
        all, _mm_loadu_si128(reinterpret_cast<const __m128i*>(code + j)));
    __m512i cols;
    if constexpr (sizeof(Index) == 2)
      cols = _mm512_maskz_cvtepu16_epi32(
          all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + j)));
    else
      cols = _mm512_loadu_si512(col + j);
    const __m512 w = small_codebook ? _mm512_permutex2var_ps(cb_lo, codes, cb_hi)
                                    : _mm512_mask_i32gather_ps(zero, all, codes, codebook, 4);
    // Two 8-wide gathers: on AMD Zen 4 they retire faster than one 16-wide gather.
    const __m256 half = _mm256_setzero_ps();
    const __m256 x_lo = _mm256_mask_i32gather_ps(half, x, _mm512_castsi512_si256(cols),
                                                 _mm256_castsi256_ps(_mm256_set1_epi32(-1)), 4);
    const __m256 x_hi = _mm256_mask_i32gather_ps(half, x, _mm512_maskz_extracti64x4_epi64(0xFF, cols, 1),
                                                 _mm256_castsi256_ps(_mm256_set1_epi32(-1)), 4);
    const __m512 xs = _mm512_insertf32x8(_mm512_zextps256_ps512(x_lo), x_hi, 1);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(w, xs));
  }
  alignas(64) float s[kDotLanes];
  _mm512_store_ps(s, acc);
  return finish_dot(s, j, col, code, nnz, codebook, x);
}

// DC_ONNX_SCALAR_DOT=1 forces the scalar loop (tests compare the two bit for bit).
#pragma GCC diagnostic pop

inline bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512dq") &&
                          std::getenv("DC_ONNX_SCALAR_DOT") == nullptr;
  return yes;
}
#endif

}  // namespace dc_onnx
