// The timed call of the decode-rate benchmark (decode_bench.h); built once per decoder.
#include "decode_bench.h"
#include "huffman.h"

namespace dc_onnx {

void bench_decode(const decode_bench::Layer& l, uint8_t* gaps, uint8_t* codes) {
  const HuffmanTable code_table(l.lengths, l.k, l.num_codes, "codes");
  if (l.index_bits == 0) {
    code_table.decode(l.codes, l.codes_bytes, codes, l.num_codes);
    return;
  }
  const HuffmanTable gap_table(l.lengths + l.k, size_t{1} << l.index_bits, l.num_entries, "gaps");
#ifdef DC_ONNX_HUFFMAN_DECODE_PAIR
  decode_pair(gap_table, HuffmanStream{l.gaps, l.gaps_bytes, gaps, l.num_entries}, code_table,
              HuffmanStream{l.codes, l.codes_bytes, codes, l.num_codes});
#else
  gap_table.decode(l.gaps, l.gaps_bytes, gaps, l.num_entries);
  code_table.decode(l.codes, l.codes_bytes, codes, l.num_codes);
#endif
}

}  // namespace dc_onnx
