#include "decoder.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "decode_error.h"
#include "side_file.h"

namespace dc_onnx {
namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits = sign;
  if (exponent == 0x1f) {
    bits |= 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits |= ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {  // subnormal: normalize
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits |= (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f = 0;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float codebook_value(const uint8_t* p, CodebookType type) {
  float f = 0;
  uint16_t h = 0;
  switch (type) {
    case CodebookType::kFloat32: std::memcpy(&f, p, 4); return f;
    case CodebookType::kFloat16: std::memcpy(&h, p, 2); return half_to_float(h);
    case CodebookType::kBFloat16: {
      std::memcpy(&h, p, 2);
      const uint32_t bits = uint32_t{h} << 16;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case CodebookType::kInt8: return static_cast<float>(static_cast<int8_t>(*p));
    case CodebookType::kUInt8: return static_cast<float>(*p);
  }
  return 0.0f;
}

}  // namespace

size_t codebook_element_size(CodebookType type) noexcept {
  switch (type) {
    case CodebookType::kFloat32: return 4;
    case CodebookType::kFloat16:
    case CodebookType::kBFloat16: return 2;
    case CodebookType::kInt8:
    case CodebookType::kUInt8: return 1;
  }
  return 4;
}

LayerStreams resolve_streams(const LayerStreams& given, const std::vector<int64_t>& stream_ids) {
  if (peek_format_version(given.header.data, given.header.size) < kWholeFileVersion) return given;
  const std::vector<TocEntry> toc = parse_header(given.header.data, given.header.size);
  LayerStreams s = given;
  Bytes* const slots[] = {&s.codebook, &s.codes, &s.gaps, &s.code_lengths, &s.row_scales};
  for (size_t i = 0; i < stream_ids.size() && i < 5; ++i) {
    const char* name = stream_name(static_cast<StreamKind>(i + 1));
    if (slots[i]->data != nullptr || slots[i]->size != 0)
      fail_decode(std::string("format version 3 reads the ") + name +
                  " stream from the side file, but the node gives it as an input");
    const int64_t id = stream_ids[i];
    if (id < 0 || static_cast<uint64_t>(id) >= toc.size())
      fail_decode(std::string(name) + " stream: stream_ids value " + std::to_string(id) +
                  " is out of range (TOC has " + std::to_string(toc.size()) + " streams)");
    // parse_header checked that the entry lies inside the buffer.
    const TocEntry& e = toc[static_cast<size_t>(id)];
    *slots[i] = Bytes{given.header.data + e.offset, static_cast<size_t>(e.nbytes)};
  }
  return s;
}

CsrMatrix decode_layer(const LayerStreams& s, const LayerAttributes& a) {
  if (a.num_entries < 0) fail_decode("num_entries is negative");
  if (a.index_bits < 0 || a.index_bits > 8)
    fail_decode("index_bits " + std::to_string(a.index_bits) + " out of range 0..8");
  if (a.stream_ids.size() != 4 && a.stream_ids.size() != 5)
    fail_decode("stream_ids must hold 4 TOC indices (5 with row scales)");
  const bool scaled = a.stream_ids.size() == 5;
  if (!scaled && s.row_scales.size != 0)
    fail_decode("row_scales given but stream_ids holds no index for them");
  const size_t element_size = codebook_element_size(s.codebook_type);
  if (s.codebook.size % element_size != 0)
    fail_decode("codebook stream is " + std::to_string(s.codebook.size) +
                " bytes, not a whole number of its " + std::to_string(element_size) +
                "-byte values");

  const std::vector<TocEntry> toc = parse_header(s.header.data, s.header.size);
  const auto m = static_cast<uint64_t>(a.num_entries);
  const size_t k = s.codebook.size / element_size;
  check_stream(toc, a.stream_ids[0], StreamKind::kCodebook, s.codebook.data, s.codebook.size, k);
  const uint64_t num_codes = check_stream(toc, a.stream_ids[1], StreamKind::kCodes, s.codes.data,
                                          s.codes.size, kCountCheckedLater);
  check_stream(toc, a.stream_ids[2], StreamKind::kGaps, s.gaps.data, s.gaps.size, m);
  check_stream(toc, a.stream_ids[3], StreamKind::kCodeLengths, s.code_lengths.data,
               s.code_lengths.size, s.code_lengths.size);

  if (scaled) {
    if (a.rows < 1 || a.rows > INT32_MAX) fail_decode("row scales for an invalid row count");
    if (s.codebook_type != CodebookType::kFloat32)
      fail_decode("row scales need a float32 codebook");
    if (s.row_scales.size != static_cast<uint64_t>(a.rows) * 4)
      fail_decode("row_scales stream is " + std::to_string(s.row_scales.size) +
                  " bytes; " + std::to_string(a.rows) + " rows need " +
                  std::to_string(static_cast<uint64_t>(a.rows) * 4));
    check_stream(toc, a.stream_ids[4], StreamKind::kRowScales, s.row_scales.data,
                 s.row_scales.size, static_cast<uint64_t>(a.rows));
  }
  if (k < 1 || k > 256)
    fail_decode("codebook has " + std::to_string(k) + " entries (must be 1..256)");
  // As float32 (exact for every codebook type): the decoder checks codebook[0] == 0 and
  // drops entries whose value is zero. The bytes may be unaligned.
  float codebook[256];
  for (size_t i = 0; i < k; ++i)
    codebook[i] = codebook_value(s.codebook.data + i * element_size, s.codebook_type);
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
  CsrMatrix csr = decode_weight(w, a.rows, a.cols);
  if (scaled) {
    csr.row_scale.resize(static_cast<size_t>(a.rows));
    std::memcpy(csr.row_scale.data(), s.row_scales.data, s.row_scales.size);
    for (const float v : csr.row_scale)
      if (!(v > 0.0f) || !std::isfinite(v))
        fail_decode("row_scales must be finite and positive");
  }
  return csr;
}

}  // namespace dc_onnx
