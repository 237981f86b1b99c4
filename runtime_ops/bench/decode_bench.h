// The decode-rate benchmark's view of one layer (models/huffman_streams.py writes them),
// and the one call it times. decode_one.cc is compiled twice: against the library's
// decoder (namespace dc_onnx) and against a baseline copy of huffman.{h,cc} renamed to
// namespace dc_onnx_baseline, so both run in one process on the same streams.
#pragma once

#include <cstddef>
#include <cstdint>

namespace decode_bench {

struct Layer {
  uint32_t k;            // code symbols
  uint32_t index_bits;   // 0: a dense weight, no gaps stream
  uint64_t num_entries;
  uint64_t num_codes;
  const uint8_t* lengths;  // k + 2^index_bits code lengths
  const uint8_t* gaps;
  size_t gaps_bytes;
  const uint8_t* codes;
  size_t codes_bytes;
  int64_t rows;  // the stored matrix
  int64_t cols;
};

}  // namespace decode_bench

namespace dc_onnx {
// Builds both tables and decodes both streams of `l` into `gaps` and `codes`.
void bench_decode(const decode_bench::Layer& l, uint8_t* gaps, uint8_t* codes);
}  // namespace dc_onnx

namespace dc_onnx_baseline {
void bench_decode(const decode_bench::Layer& l, uint8_t* gaps, uint8_t* codes);
}  // namespace dc_onnx_baseline
