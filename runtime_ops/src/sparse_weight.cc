#include "sparse_weight.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
#endif

#include "decode_error.h"
#include "huffman.h"

namespace dc_onnx {
namespace {

// The decode time is the creating thread's CPU time where the OS keeps one, so that the
// throughput figures (bench, DC_ONNX_DECODE_STATS) leave out time spent waiting for a
// core on a busy machine; elsewhere the steady clock.
struct Clock {
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<std::chrono::steady_clock, duration>;
  static time_point now() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return time_point(std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec));
#else
    return std::chrono::time_point_cast<duration>(std::chrono::steady_clock::now());
#endif
  }
};

}  // namespace

void check_implicit_rows(int64_t rows, int64_t cols, uint64_t reached) {
  const auto ucols = static_cast<uint64_t>(cols);
  const auto urows = static_cast<uint64_t>(rows);
  const uint64_t rows_reached = std::min(urows, (reached + ucols - 1) / ucols);
  const uint64_t trailing = urows - rows_reached;
  if (trailing > std::max(kMaxImplicitRows, rows_reached))
    fail_decode("the stored matrix has " + std::to_string(rows) + " rows but the gaps " +
                "stream reaches only the first " + std::to_string(rows_reached) +
                "; at most max(" + std::to_string(kMaxImplicitRows) +
                ", rows reached) trailing rows may be implicit zeros");
}

CsrMatrix decode_weight(const EncodedWeight& w, int64_t rows, int64_t cols) {
  if (w.k < 1 || w.k > 256)
    fail_decode("codebook has " + std::to_string(w.k) + " entries (must be 1..256)");
  if (w.codebook[0] != 0.0f) fail_decode("codebook[0] must be 0.0 (code 0 is the zero weight)");
  if (w.index_bits > 8)
    fail_decode("index_bits " + std::to_string(w.index_bits) + " out of range 0..8");
  // index_bits 0: the dense form, no relative indices, one code per position.
  const bool dense = w.index_bits == 0;
  const size_t num_gaps = size_t{1} << w.index_bits;
  if (w.code_lengths_count != w.k + num_gaps)
    fail_decode("code_lengths has " + std::to_string(w.code_lengths_count) +
                " entries, expected k + 2^index_bits = " + std::to_string(w.k + num_gaps));
  // Column indices are stored as uint32; both limits also keep rows*cols below 2^62.
  if (rows < 1 || cols < 1 || rows > INT32_MAX || cols > INT32_MAX)
    fail_decode("stored matrix [" + std::to_string(rows) + "," + std::to_string(cols) +
                "] has a dimension outside 1..2^31-1");
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
  const uint64_t m = w.num_entries;
  // Every entry sits on its own position and every code takes at least one bit; checking
  // both before allocating keeps memory bounded by what the streams can hold.
  if (m > n)
    fail_decode("num_entries " + std::to_string(m) + " exceeds rows*cols = " + std::to_string(n));
  if (m > uint64_t{w.gaps_bytes} * 8)
    fail_decode("gaps stream is too short for " + std::to_string(m) + " entries (truncated)");

  if (dense && (m != 0 || w.gaps_bytes != 0))
    fail_decode("a dense weight (index_bits 0) has no gaps stream and num_entries 0");
  // Dense: one code per position, each at least one bit, checked before n bytes of
  // symbols are allocated (weight_shape alone must not size memory).
  if (dense && n > uint64_t{w.codes_bytes} * 8)
    fail_decode("codes stream is too short for " + std::to_string(n) + " codes (truncated)");
  // Dense: every position takes the next code, as gaps of 0 would say.
  std::vector<uint8_t> gaps(static_cast<size_t>(dense ? n : m));
  // Both streams are decoded at once, their look-ups interleaved, with the code count the
  // TOC gives (bounded by the codes stream's bits). If anything is wrong they are decoded
  // again one after the other, with the checks in between, so that a damaged file gets
  // the same error as ever.
  std::vector<uint8_t> codes;
  const bool pair = !dense && w.num_codes <= uint64_t{w.codes_bytes} * 8;
  if (pair) codes.resize(static_cast<size_t>(w.num_codes));
  // The decode time covers building the tables and decoding, nothing else.
  auto start = Clock::now();
  bool both = false;
  if (pair) {
    try {
      const HuffmanTable gap_table(w.code_lengths + w.k, num_gaps, m, "gaps");
      const HuffmanTable code_table(w.code_lengths, w.k, w.num_codes, "codes");
      decode_pair(gap_table, HuffmanStream{w.gaps, w.gaps_bytes, gaps.data(), gaps.size()},
                  code_table, HuffmanStream{w.codes, w.codes_bytes, codes.data(), codes.size()});
      both = true;
    } catch (const DecodeError&) {
      // Decoded again below, one stream at a time, for the error a damaged file gets.
    }
  }
  if (!both) {
    const HuffmanTable gap_table(w.code_lengths + w.k, num_gaps, m, "gaps");
    if (!dense) gap_table.decode(w.gaps, w.gaps_bytes, gaps.data(), gaps.size());
  }
  auto spent = Clock::now() - start;
  // The largest gap symbol is the escape: it skips that many zeros and carries no code.
  const auto escape = static_cast<uint8_t>(num_gaps - 1);
  uint64_t c = 0;
  uint64_t reached = dense ? n : 0;  // positions covered (the cursor after the last entry)
  for (uint8_t g : gaps) {
    c += dense || g != escape;
    reached += dense ? 0 : (g == escape ? g : uint64_t{g} + 1);  // <= 256 * m: no overflow
  }
  check_implicit_rows(rows, cols, reached);
  if (c != w.num_codes)
    fail_decode("gaps stream implies " + std::to_string(c) + " codes but the TOC says " +
                std::to_string(w.num_codes));
  if (c > uint64_t{w.codes_bytes} * 8)
    fail_decode("codes stream is too short for " + std::to_string(c) + " codes (truncated)");
  if (!both) {
    codes.assign(static_cast<size_t>(c), 0);
    start = Clock::now();
    const HuffmanTable code_table(w.code_lengths, w.k, c, "codes");
    code_table.decode(w.codes, w.codes_bytes, codes.data(), codes.size());
    spent += Clock::now() - start;
  }

  CsrMatrix csr;
  csr.rows = rows;
  csr.cols = cols;
  csr.symbols = m + c;
  csr.decode_ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(spent).count());
  std::copy(w.codebook, w.codebook + w.k, csr.codebook.begin());
  csr.col.reserve(static_cast<size_t>(c));
  csr.code.reserve(static_cast<size_t>(c));
  csr.row_ptr.assign(static_cast<size_t>(rows) + 1, 0);
  const auto ucols = static_cast<uint64_t>(cols);
  uint64_t next = 0;  // the first position the next weight may take
  size_t i = 0;       // next code
  for (size_t j = 0; j < gaps.size(); ++j) {
    if (!dense && gaps[j] == escape) {
      next += escape;
      if (next > n) fail_decode("escape at entry " + std::to_string(j) + " runs past rows*cols");
      continue;
    }
    const uint64_t p = next + gaps[j];
    if (p >= n)
      fail_decode("entry " + std::to_string(j) + " lands on position " + std::to_string(p) +
                  " >= rows*cols = " + std::to_string(n));
    next = p + 1;
    const uint8_t code = codes[i++];
    if (code >= w.k)
      fail_decode("entry " + std::to_string(j) + " has code " + std::to_string(code) + " >= k");
    if (w.codebook[code] == 0.0f) continue;  // a weight clustered to exactly zero adds nothing
    ++csr.row_ptr[static_cast<size_t>(p / ucols) + 1];
    csr.col.push_back(static_cast<uint32_t>(p % ucols));
    csr.code.push_back(code);
  }
  for (size_t r = 0; r < static_cast<size_t>(rows); ++r) csr.row_ptr[r + 1] += csr.row_ptr[r];
  return csr;
}

}  // namespace dc_onnx
