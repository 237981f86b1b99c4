#include "block_rows.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "panel.h"
#include "simd.h"

#ifdef DC_ONNX_X86
#include <immintrin.h>
#endif

namespace dc_onnx {
namespace {

// Relative costs for choosing the form, from runs of a 4096 x 4096 layer on an AVX-512
// CPU (docs/benchmarks.md, "The batch-1 block form"): a round's lane (a slot, used or
// not) costs 1, a weight in the grouped form about 2.4 (gathered), one of the overflow
// about 4.5 (its pieces are short).
constexpr double kClusterCost = 2.0;  // below the measured 2.4: the block form must win clearly
constexpr double kOverflowCost = 4.5;
constexpr uintptr_t kEntriesAhead = 4096;  // bytes; a group's block is 32-128
constexpr uintptr_t kMasksAhead = 1024;

// Weights per (row, block): count[row * blocks + block].
std::vector<uint8_t> block_counts(const CsrMatrix& m, int64_t blocks) {
  std::vector<uint8_t> count(static_cast<size_t>(m.rows * blocks), 0);
  for (int64_t n = 0; n < m.rows; ++n)
    for (size_t j = m.row_ptr[static_cast<size_t>(n)], end = m.row_ptr[static_cast<size_t>(n) + 1];
         j < end; ++j)
      ++count[static_cast<size_t>(n * blocks + m.col[j] / kBlockCols)];  // <= 32: fits
  return count;
}

// R minimising slots + kOverflowCost * overflow; 0 when even that loses to the grouped form.
int64_t choose_rounds(const CsrMatrix& m, const std::vector<uint8_t>& count, int64_t groups,
                      int64_t blocks) {
  const double nnz = static_cast<double>(m.code.size());
  int64_t best = 0;
  double best_cost = kClusterCost * nnz;
  for (int64_t r = 1; r <= kMaxRounds; ++r) {
    double over = 0;
    for (const uint8_t c : count) over += c > r ? static_cast<double>(c - r) : 0.0;
    const double slots = static_cast<double>(groups * blocks * r * kBlockLanes);
    const double cost = slots + kOverflowCost * over;
    if (cost < best_cost) {
      best = r;
      best_cost = cost;
    }
  }
  return best;
}

// y = ((a0 + a1) + (a2 + a3)) + overflow, lane by lane (the documented order).
void combine(const float* a0, const float* a1, const float* a2, const float* a3,
             const float* over, int64_t lanes, float* out) {
  for (int64_t l = 0; l < lanes; ++l) out[l] = ((a0[l] + a1[l]) + (a2[l] + a3[l])) + over[l];
}

void dots_scalar(const BlockRows& w, const float* x, int64_t g0, int64_t g1, const float* over,
                 float* out) {
  const auto per_group = static_cast<size_t>(w.blocks * w.rounds);
  for (int64_t g = g0; g < g1; ++g) {
    float a[kMaxRounds][kBlockLanes] = {};
    const uint16_t* e = w.entry.data() + static_cast<size_t>(g) * per_group * kBlockLanes;
    for (int64_t b = 0; b < w.blocks; ++b) {
      const float* xb = x + b * kBlockCols;
      // An empty lane (entry 0) adds +0, which leaves its sum as it is: a sum that starts
      // at +0 is never -0. (A branch per lane mispredicted: 15x slower.)
      for (int64_t r = 0; r < w.rounds; ++r, e += kBlockLanes)
        for (int64_t l = 0; l < kBlockLanes; ++l)
          a[r][l] += e[l] != 0 ? w.value[e[l] >> 5] * xb[e[l] & 31] : 0.0f;
    }
    const int64_t lanes = std::min(kBlockLanes, w.rows - g * kBlockLanes);
    const int64_t at = (g - g0) * kBlockLanes;
    combine(a[0], a[1], a[2], a[3], over + at, lanes, out + at);
  }
}

#ifdef DC_ONNX_X86
// One round: the 16 lanes' activations and codebook values by permutes of the block's
// and the codebook's two registers, their products added to a[r] where the mask is set.
template <int64_t R>
DC_ONNX_TARGET_AVX512 void dots_avx512(const BlockRows& w, const float* x, int64_t g0, int64_t g1,
                                       const float* over, float* out) {
  const __m512 v0 = _mm512_loadu_ps(w.value.data());
  const __m512 v1 = _mm512_loadu_ps(w.value.data() + 16);
  const auto per_group = static_cast<size_t>(w.blocks * R);
  for (int64_t g = g0; g < g1; ++g) {
    __m512 a[kMaxRounds];
    for (auto& v : a) v = _mm512_setzero_ps();
    const uint16_t* e = w.entry.data() + static_cast<size_t>(g) * per_group * kBlockLanes;
    const uint16_t* mk = w.mask.data() + static_cast<size_t>(g) * per_group;
    const float* xb = x;
    for (int64_t b = 0; b < w.blocks; ++b, xb += kBlockCols, e += R * kBlockLanes, mk += R) {
      // Entries and masks asked for ahead: after another layer or model they come from
      // L3 or memory, and without this the loop waited on them (0.71-0.78 ms against
      // 0.56-0.59 ms on the 4096 x 4096 layer at 9% after a dense Run). Integer
      // arithmetic: the address may lie past the arrays, which a pointer may not.
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(e) + kEntriesAhead;
      for (uintptr_t line = 0; line < R * kBlockLanes * sizeof(uint16_t); line += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(ahead + line));
      const uintptr_t masks = reinterpret_cast<uintptr_t>(mk) + kMasksAhead;
      __builtin_prefetch(reinterpret_cast<const void*>(masks));
      const __m512 x0 = _mm512_loadu_ps(xb);
      const __m512 x1 = _mm512_loadu_ps(xb + 16);
#pragma GCC unroll 4
      for (int64_t r = 0; r < R; ++r) {
        // (maskz forms: gcc 12 warns of the plain ones' undefined upper source)
        const __m512i v = _mm512_maskz_cvtepu16_epi32(
            0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e + r * kBlockLanes)));
        const __m512 xv = _mm512_permutex2var_ps(x0, v, x1);  // low 5 bits: the column
        const __m512 cv = _mm512_permutex2var_ps(v0, _mm512_maskz_srli_epi32(0xFFFF, v, 5), v1);
        const auto held = static_cast<__mmask16>(mk[r]);
        a[r] = _mm512_mask_add_ps(a[r], held, a[r], _mm512_mul_ps(cv, xv));
      }
    }
    const int64_t lanes = std::min(kBlockLanes, w.rows - g * kBlockLanes);
    const auto live = static_cast<__mmask16>((1u << lanes) - 1);  // the last group may be short
    const __m512 o = _mm512_maskz_loadu_ps(live, over + (g - g0) * kBlockLanes);
    const __m512 s =
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])), o);
    _mm512_mask_storeu_ps(out + (g - g0) * kBlockLanes, live, s);
  }
}

#endif

}  // namespace

bool block_rows_enabled() {
  static const bool enabled = [] {
    if (const char* v = std::getenv("DC_ONNX_BLOCK_ROWS"); v != nullptr && *v != '\0')
      return std::strcmp(v, "0") != 0;
    return isa() == Isa::kAvx512;
  }();
  return enabled;
}

BlockRows pack_blocks(const CsrMatrix& m) {
  BlockRows w;
  w.rows = m.rows;
  w.cols = m.cols;
  if (!block_rows_enabled()) return w;
  for (const uint8_t k : m.code)
    if (k >= 32) return w;  // more than 32 codes: no two-register look-up
  const int64_t groups = (m.rows + kBlockLanes - 1) / kBlockLanes;
  const int64_t blocks = (m.cols + kBlockCols - 1) / kBlockCols;
  // One round's slots alone cost more than the grouped form: the form cannot win. Checked
  // before allocating per (row, block), which would follow the dense size, not the
  // non-zeros (a 100 x 2^30 weight with 5000 non-zeros asked for 3 GiB).
  if (static_cast<double>(groups * blocks * kBlockLanes) >=
      kClusterCost * static_cast<double>(m.code.size()))
    return w;
  w.groups = groups;
  w.blocks = blocks;
  const std::vector<uint8_t> count = block_counts(m, w.blocks);
  const int64_t rounds = choose_rounds(m, count, w.groups, w.blocks);
  if (rounds == 0) return w;
  w.rounds = rounds;
  std::copy(m.codebook.begin(), m.codebook.begin() + 32, w.value.begin());
  const auto slots = static_cast<size_t>(w.groups * w.blocks * rounds);
  w.entry.assign(slots * kBlockLanes, 0);
  w.mask.assign(slots, 0);
  CsrMatrix over;
  over.rows = m.rows;
  over.cols = m.cols;
  over.codebook = m.codebook;
  over.row_ptr.push_back(0);
  for (int64_t n = 0; n < m.rows; ++n) {
    const int64_t g = n / kBlockLanes;
    const int64_t l = n % kBlockLanes;
    int64_t block = -1;
    int64_t r = 0;
    const size_t end = m.row_ptr[static_cast<size_t>(n) + 1];
    for (size_t j = m.row_ptr[static_cast<size_t>(n)]; j < end; ++j) {
      const int64_t b = m.col[j] / kBlockCols;  // columns ascend within a row
      r = b == block ? r + 1 : 0;
      block = b;
      if (r < rounds) {
        const auto slot = static_cast<size_t>((g * w.blocks + b) * rounds + r);
        w.entry[slot * kBlockLanes + static_cast<size_t>(l)] =
            static_cast<uint16_t>((m.col[j] % kBlockCols) | (uint32_t{m.code[j]} << 5));
        w.mask[slot] = static_cast<uint16_t>(w.mask[slot] | (1u << l));
      } else {
        over.col.push_back(m.col[j]);
        over.code.push_back(m.code[j]);
      }
    }
    over.row_ptr.push_back(over.col.size());
  }
  w.overflow = pack_clusters(over);
  return w;
}

void block_dots(const BlockRows& w, const float* x, int64_t g0, int64_t g1, float* out) {
  // The overflow's sums go to `out` first; each group reads its lanes' before writing them.
  cluster_dots(w.overflow, x, g0 * kBlockLanes, std::min(w.rows, g1 * kBlockLanes), out);
#ifdef DC_ONNX_X86
  if (isa() == Isa::kAvx512) {
    switch (w.rounds) {
      case 1: return dots_avx512<1>(w, x, g0, g1, out, out);
      case 2: return dots_avx512<2>(w, x, g0, g1, out, out);
      case 3: return dots_avx512<3>(w, x, g0, g1, out, out);
      default: return dots_avx512<4>(w, x, g0, g1, out, out);
    }
  }
#endif
  dots_scalar(w, x, g0, g1, out, out);
}

}  // namespace dc_onnx
