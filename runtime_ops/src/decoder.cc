#include "decoder.h"

#include <cstring>
#include <string>

#include "decode_error.h"
#include "side_file.h"

namespace dc_onnx {

CsrMatrix decode_layer(const LayerStreams& s, const LayerAttributes& a) {
  if (a.num_entries < 0) fail_decode("num_entries is negative");
  if (a.index_bits < 1 || a.index_bits > 8)
    fail_decode("index_bits " + std::to_string(a.index_bits) + " out of range 1..8");
  if (a.stream_ids.size() != 4) fail_decode("stream_ids must hold 4 TOC indices");
  if (s.codebook.size % sizeof(float) != 0)
    fail_decode("codebook stream is " + std::to_string(s.codebook.size) +
                " bytes, not a whole number of float32 values");

  const std::vector<TocEntry> toc = parse_header(s.header.data, s.header.size);
  const auto m = static_cast<uint64_t>(a.num_entries);
  const size_t k = s.codebook.size / sizeof(float);
  check_stream(toc, a.stream_ids[0], StreamKind::kCodebook, s.codebook.data, s.codebook.size, k);
  const uint64_t num_codes = check_stream(toc, a.stream_ids[1], StreamKind::kCodes, s.codes.data,
                                          s.codes.size, kCountCheckedLater);
  check_stream(toc, a.stream_ids[2], StreamKind::kGaps, s.gaps.data, s.gaps.size, m);
  check_stream(toc, a.stream_ids[3], StreamKind::kCodeLengths, s.code_lengths.data,
               s.code_lengths.size, s.code_lengths.size);

  if (k < 1 || k > 256)
    fail_decode("codebook has " + std::to_string(k) + " entries (must be 1..256)");
  float codebook[256];
  std::memcpy(codebook, s.codebook.data, s.codebook.size);  // the bytes may be unaligned
  EncodedWeight w{};
  w.codebook = codebook;
  w.k = k;
  w.codes = s.codes.data;
  w.codes_bytes = s.codes.size;
  w.gaps = s.gaps.data;
  w.gaps_bytes = s.gaps.size;
  w.code_lengths = s.code_lengths.data;
  w.code_lengths_count = s.code_lengths.size;
  w.num_entries = m;
  w.num_codes = num_codes;
  w.index_bits = static_cast<unsigned>(a.index_bits);
  return decode_weight(w, a.rows, a.cols);
}

}  // namespace dc_onnx
