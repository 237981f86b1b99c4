#include "cluster_rows.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "panel.h"
#include "simd.h"

#ifdef DC_ONNX_X86
#include <immintrin.h>
#endif

namespace dc_onnx {
namespace {

constexpr size_t kPiece = 8;          // the largest piece; then 4, 2, 1
constexpr double kGroupWork = 24.0;   // a group's lane products and loop exit, in index
                                      // slots (an estimate: 8 products, 8 sums, a branch)

using Piece = std::pair<uint8_t, size_t>;  // (code, first entry in the row's sorted list)

// Index slots plus group work of `n` pieces of `size` entries (empty lanes included).
double piece_cost(size_t n, size_t size) {
  const double groups = static_cast<double>((n + kGroupLanes - 1) / kGroupLanes);
  return groups * (static_cast<double>(size * kGroupLanes) + kGroupWork);
}

// Pieces of each size (index 0: 8, 1: 4, 2: 2, 3: 1). Each code's run of c entries gives
// c / 8 pieces of 8 and the binary digits of c % 8; then, largest size first, some
// pieces are halved when that fills empty lanes of the smaller size for less than the
// lanes they leave empty (fewer index slots and groups in all).
// `codes` lists the codes present, ascending; `by_size` is reused from row to row.
using BySize = std::array<std::vector<Piece>, 4>;
void cut_pieces(const std::vector<uint8_t>& codes, const std::array<size_t, 256>& start,
                const std::array<size_t, 256>& count, BySize& by_size) {
  for (auto& v : by_size) v.clear();
  for (const uint8_t k : codes) {
    const size_t c = count[k];
    const size_t rest = c % kPiece;
    for (size_t o = 0; o + kPiece <= c; o += kPiece) by_size[0].emplace_back(k, start[k] + o);
    size_t o = start[k] + c - rest;  // the remainder's digits, largest first
    for (size_t i = 1, size = kPiece / 2; size >= 1; ++i, size /= 2)
      if ((rest & size) != 0) {
        by_size[i].emplace_back(k, o);
        o += size;
      }
  }
  for (size_t i = 0, size = kPiece; i + 1 < by_size.size(); ++i, size /= 2) {
    auto& big = by_size[i];
    auto& small = by_size[i + 1];
    size_t best = 0;
    double best_cost = piece_cost(big.size(), size) + piece_cost(small.size(), size / 2);
    for (size_t s = 1; s <= big.size(); ++s) {
      const double cost = piece_cost(big.size() - s, size) + piece_cost(small.size() + 2 * s, size / 2);
      if (cost < best_cost) {
        best = s;
        best_cost = cost;
      }
    }
    for (size_t s = 0; s < best; ++s) {
      const Piece p = big.back();
      big.pop_back();
      small.emplace_back(p.first, p.second);
      small.emplace_back(p.first, p.second + size / 2);
    }
    std::sort(small.begin(), small.end());  // by code, then column
  }
}

// Row n's groups appended to w: `sorted` holds its columns ordered by code, then column;
// start[k] / count[k] where code k's run begins and how long it is.
template <typename Index>
void pack_row(ClusterRows& w, std::vector<Index>& idx, const CsrMatrix& m,
              const std::vector<uint32_t>& sorted, const BySize& by_size) {
  for (size_t i = 0, size = kPiece; i < by_size.size(); ++i, size /= 2) {
    const std::vector<Piece>& pieces = by_size[i];
    for (size_t p0 = 0; p0 < pieces.size(); p0 += kGroupLanes) {
      w.rounds.push_back(static_cast<uint8_t>(size));
      for (size_t l = 0; l < kGroupLanes; ++l)
        w.lane_weight.push_back(p0 + l < pieces.size() ? m.codebook[pieces[p0 + l].first] : 0.0f);
      for (size_t r = 0; r < size; ++r)
        for (size_t l = 0; l < kGroupLanes; ++l)
          idx.push_back(p0 + l < pieces.size() ? static_cast<Index>(sorted[pieces[p0 + l].second + r])
                                               : static_cast<Index>(w.cols));
    }
  }
}

template <typename Index>
void pack_all(ClusterRows& w, std::vector<Index>& idx, const CsrMatrix& m) {
  idx.reserve(m.code.size() + m.code.size() / 8);
  std::vector<uint32_t> sorted;
  std::vector<uint8_t> codes;
  std::array<size_t, 256> start{};
  std::array<size_t, 256> count{};
  BySize by_size;
  for (int64_t n = 0; n < m.rows; ++n) {
    const size_t b = m.row_ptr[static_cast<size_t>(n)];
    const size_t e = m.row_ptr[static_cast<size_t>(n) + 1];
    count.fill(0);
    for (size_t j = b; j < e; ++j) ++count[m.code[j]];
    codes.clear();
    size_t at = 0;
    for (size_t k = 1; k < 256; ++k) {  // code 0 is never stored
      start[k] = at;
      at += count[k];
      if (count[k] != 0) codes.push_back(static_cast<uint8_t>(k));
    }
    sorted.resize(e - b);
    std::array<size_t, 256> next = start;
    for (size_t j = b; j < e; ++j) sorted[next[m.code[j]]++] = m.col[j];  // stable: columns ascend
    cut_pieces(codes, start, count, by_size);
    pack_row(w, idx, m, sorted, by_size);
    w.row_group.push_back(w.rounds.size());
    w.row_slot.push_back(idx.size());
  }
}

// s[l] = x[i_1] + x[i_2] + ... + x[i_R], left to right, over lane l's R indices (round
// r at p[8r + l]); `get(v, i)` loads x[i] into v. Starting from x[i_1] rather than
// +0 + x[i_1] changes only a lane of -0 inputs to -0, and c * -0 added to a row sum
// that is never -0 leaves it unchanged: the documented sum's bits. Fully unrolled (the
// first round peeled): a loop over the rounds cost a counter and a test per round, about
// a fifth of the instructions of a round.
template <size_t R, typename Index, typename T, typename Get>
DC_ONNX_INLINE void lane_sums(const Index* p, T* s, Get get) {
  const auto two = [p](size_t at, size_t& i0, size_t& i1) {
    i0 = p[at];
    i1 = p[at + 1];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if constexpr (sizeof(Index) == 2) {  // one 4-byte load for two indices
      uint32_t both;
      std::memcpy(&both, p + at, 4);
      i0 = both & 0xFFFF;
      i1 = both >> 16;
    }
#endif
  };
#pragma GCC unroll 8
  for (size_t l = 0; l < kGroupLanes; l += 2) {
    size_t i0, i1;
    two(l, i0, i1);
    get(s[l], i0);
    get(s[l + 1], i1);
  }
#pragma GCC unroll 8
  for (size_t r = 1; r < R; ++r) {
#pragma GCC unroll 8
    for (size_t l = 0; l < kGroupLanes; l += 2) {
      size_t i0, i1;
      two(r * kGroupLanes + l, i0, i1);
      T v0, v1;
      get(v0, i0);
      get(v1, i1);
      s[l] += v0;
      s[l + 1] += v1;
    }
  }
}

// a[l] += c[l] * s[l] for the 8 lanes. One activation vector: as two 4-float vectors,
// the same operations per lane in fewer instructions.
template <typename T>
DC_ONNX_INLINE void add_products(T* a, const float* c, const T* s) {
  if constexpr (std::is_same_v<T, float>) {
    Vec4 lo, hi, c_lo, c_hi;
    load(lo, a);
    load(hi, a + 4);
    load(c_lo, c);
    load(c_hi, c + 4);
    lo += c_lo * Vec4{s[0], s[1], s[2], s[3]};
    hi += c_hi * Vec4{s[4], s[5], s[6], s[7]};
    store(a, lo);
    store(a + 4, hi);
  } else {
    for (size_t l = 0; l < kGroupLanes; ++l) a[l] += c[l] * s[l];
  }
}

// One row: the documented sum (cluster_rows.h) with T = float (one activation vector)
// or a vector type (one lane per activation vector).
template <typename T, typename Index, typename Get>
DC_ONNX_INLINE void row_sum(const ClusterRows& w, const Index* idx, int64_t n, Get get, T& out) {
  T a[kGroupLanes];
  for (auto& v : a) v = T{};
  const Index* p = idx + w.row_slot[static_cast<size_t>(n)];
  const size_t g1 = w.row_group[static_cast<size_t>(n) + 1];
  for (size_t g = w.row_group[static_cast<size_t>(n)]; g < g1; ++g) {
    T s[kGroupLanes];
    const size_t r = w.rounds[g];
    switch (r) {
      case 8: lane_sums<8>(p, s, get); break;
      case 4: lane_sums<4>(p, s, get); break;
      case 2: lane_sums<2>(p, s, get); break;
      default: lane_sums<1>(p, s, get); break;
    }
    p += r * kGroupLanes;
    add_products(a, w.lane_weight.data() + g * kGroupLanes, s);
  }
  for (size_t l = 0; l < 4; ++l) a[l] += a[l + 4];
  for (size_t l = 0; l < 2; ++l) a[l] += a[l + 2];
  out = a[0] + a[1];
}

template <typename Index>
void dots(const ClusterRows& w, const Index* idx, const float* x, int64_t n0, int64_t n1,
          float* out) {
  const auto get = [x](float& v, size_t i) { v = x[i]; };
  for (int64_t n = n0; n < n1; ++n) row_sum(w, idx, n, get, out[n - n0]);
}

template <typename Vec, typename Index>
DC_ONNX_INLINE void columns(const ClusterRows& w, const Index* idx, const float* xk, int64_t n0,
                            int64_t n1, float* out) {
  constexpr size_t kWidth = sizeof(Vec) / sizeof(float);
  const auto get = [xk](Vec& v, size_t i) { load(v, xk + i * kWidth); };
  for (int64_t n = n0; n < n1; ++n) {
    Vec y;
    row_sum(w, idx, n, get, y);
    store(out + (n - n0) * static_cast<int64_t>(kWidth), y);
  }
}

template <typename Vec>
DC_ONNX_INLINE void columns(const ClusterRows& w, const float* xk, int64_t n0, int64_t n1,
                            float* out) {
  if (w.cols < 65536)
    columns<Vec>(w, w.idx16.data(), xk, n0, n1, out);
  else
    columns<Vec>(w, w.idx32.data(), xk, n0, n1, out);
}

#ifdef DC_ONNX_X86
// Round r of a group's lanes: 8 column indices, widened to 32 bits.
DC_ONNX_TARGET_AVX512 DC_ONNX_INLINE __m256i round_indices(const uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
DC_ONNX_TARGET_AVX512 DC_ONNX_INLINE __m256i round_indices(const uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// lane_sums for one activation vector with one 8-lane gather per round: lane l of the
// gather is lane l of the group, so each chain still adds its values left to right.
template <size_t R, typename Index>
DC_ONNX_TARGET_AVX512 DC_ONNX_INLINE __m256 gathered_sums(const Index* p, const float* x) {
  __m256 s = _mm256_i32gather_ps(x, round_indices(p), 4);
#pragma GCC unroll 8
  for (size_t r = 1; r < R; ++r)
    s = _mm256_add_ps(s, _mm256_i32gather_ps(x, round_indices(p + r * kGroupLanes), 4));
  return s;
}

// dots where gathers are fast (fast_gathers(): AVX-512 CPUs without the Gather Data
// Sampling mitigation gather 8 floats faster than they load them one by one): the
// documented sum's bits, the lane products and final halvings being the scalar loop's
// in 8-lane registers.
template <typename Index>
DC_ONNX_TARGET_AVX512 void dots_avx512(const ClusterRows& w, const Index* idx, const float* x,
                                       int64_t n0, int64_t n1, float* out) {
  for (int64_t n = n0; n < n1; ++n) {
    __m256 a = _mm256_setzero_ps();
    const Index* p = idx + w.row_slot[static_cast<size_t>(n)];
    const size_t g1 = w.row_group[static_cast<size_t>(n) + 1];
    for (size_t g = w.row_group[static_cast<size_t>(n)]; g < g1; ++g) {
      const size_t r = w.rounds[g];
      __m256 s;
      switch (r) {
        case 8: s = gathered_sums<8>(p, x); break;
        case 4: s = gathered_sums<4>(p, x); break;
        case 2: s = gathered_sums<2>(p, x); break;
        default: s = gathered_sums<1>(p, x); break;
      }
      p += r * kGroupLanes;
      a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_loadu_ps(w.lane_weight.data() + g * kGroupLanes), s));
    }
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    out[n - n0] = _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
  }
}

DC_ONNX_TARGET_AVX2 void columns_avx2(const ClusterRows& w, const float* xk, int64_t n0,
                                      int64_t n1, float* out) {
  columns<Vec8>(w, xk, n0, n1, out);
}
#endif
void columns_baseline(const ClusterRows& w, const float* xk, int64_t n0, int64_t n1,
                      float* out) {
  columns<Vec4>(w, xk, n0, n1, out);
}

}  // namespace

ClusterRows pack_clusters(const CsrMatrix& m) {
  ClusterRows w;
  w.rows = m.rows;
  w.cols = m.cols;
  w.row_group.push_back(0);
  w.row_slot.push_back(0);
  if (m.cols < 65536)  // every column index and K itself fit in 16 bits
    pack_all(w, w.idx16, m);
  else
    pack_all(w, w.idx32, m);
  return w;
}

double cluster_work(const ClusterRows& w, int64_t n) {
  return static_cast<double>(w.row_slot[static_cast<size_t>(n)]) +
         kGroupWork * static_cast<double>(w.row_group[static_cast<size_t>(n)]);
}

void cluster_dots(const ClusterRows& w, const float* x, int64_t n0, int64_t n1, float* out) {
#ifdef DC_ONNX_X86
  if (fast_gathers()) {
    if (w.cols < 65536)
      dots_avx512(w, w.idx16.data(), x, n0, n1, out);
    else
      dots_avx512(w, w.idx32.data(), x, n0, n1, out);
    return;
  }
#endif
  if (w.cols < 65536)
    dots(w, w.idx16.data(), x, n0, n1, out);
  else
    dots(w, w.idx32.data(), x, n0, n1, out);
}

int64_t cluster_width() { return isa() >= Isa::kAvx2 ? 8 : 4; }

void cluster_columns(const ClusterRows& w, const float* xk, int64_t n0, int64_t n1, float* out) {
#ifdef DC_ONNX_X86
  if (isa() >= Isa::kAvx2) return columns_avx2(w, xk, n0, n1, out);
#endif
  columns_baseline(w, xk, n0, n1, out);
}

}  // namespace dc_onnx
