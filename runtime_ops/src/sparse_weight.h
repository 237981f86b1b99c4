// The decoded form of a compressed weight: the stored [rows, cols] matrix in CSR with
// one-byte codebook indices, holding only the entries whose codebook value is non-zero.
// Kernels repack it into their own resident form (narrower indices, conv tap keys).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dc_onnx {

struct CsrMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<size_t> row_ptr;  // rows + 1 offsets into col/val
  std::vector<uint32_t> col;
  std::vector<uint8_t> code;          // codebook index per entry; its value is never 0
  std::array<float, 256> codebook{};  // zero past the stored codebook's k entries
  // Empty, or one float32 per row: W[r, c] = float32(row_scale[r] * codebook[code]).
  std::vector<float> row_scale;
  uint64_t symbols = 0;               // Huffman symbols decoded (gaps + codes)
  uint64_t decode_ns = 0;             // time spent in the Huffman decoder alone
};

// The raw inputs 2-5 of a compressed op, already checked against the TOC.
struct EncodedWeight {
  const float* codebook;
  size_t k;                    // codebook size
  const uint8_t* codes;
  size_t codes_bytes;
  const uint8_t* gaps;
  size_t gaps_bytes;
  const uint8_t* code_lengths;  // k + 2^index_bits lengths
  size_t code_lengths_count;
  uint64_t num_entries;        // m, gap symbols (escapes included)
  uint64_t num_codes;          // code symbols: one per non-escape gap (TOC count)
  unsigned index_bits;         // b
};

// Rows past the last one the gaps stream reaches are implicit zeros, yet each still costs
// a resident row offset: a side file of a few bytes could claim 2^31 of them. At most
// max(kMaxImplicitRows, rows reached) such trailing rows are accepted, so memory stays
// bounded by the streams (docs/format.md, "Validation").
constexpr uint64_t kMaxImplicitRows = 65536;

// Throws DecodeError when [rows, cols] ends with more implicit rows than allowed, the
// gaps having covered the first `reached` positions.
void check_implicit_rows(int64_t rows, int64_t cols, uint64_t reached);

// Validates and Huffman-decodes the streams into CSR over a [rows, cols] matrix.
// Throws dc_onnx::DecodeError on any defect (see docs/format.md, "Validation").
CsrMatrix decode_weight(const EncodedWeight& w, int64_t rows, int64_t cols);

}  // namespace dc_onnx
