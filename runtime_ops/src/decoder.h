// The standalone decoder's entry point: the bytes of one layer's inputs 1-5 (or, from
// format version 3, of the whole side file) and its attributes in, the decoded weight (or
// a DecodeError) out. Needs no ORT header: the
// kernels (weight_loader.cc), the C++ tests and fuzz targets all call this one function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparse_weight.h"

namespace dc_onnx {

// A read-only byte range (one input tensor's raw data).
struct Bytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// Element type of a codebook: float32 for the compute ops; CompressedConstant keeps its
// weight's own dtype (docs/format.md). Each converts to float32 exactly.
enum class CodebookType { kFloat32, kFloat16, kBFloat16, kInt8, kUInt8 };

size_t codebook_element_size(CodebookType type) noexcept;

// The header and the four streams of a compressed op (docs/format.md, "Op schemas"), as
// raw bytes. The codebook holds values of `codebook_type` in host byte order and need
// not be aligned.
struct LayerStreams {
  Bytes header;
  Bytes codebook;
  Bytes codes;
  Bytes gaps;
  Bytes code_lengths;
  Bytes row_scales{};  // float32 per row, host byte order; empty unless stream_ids has 5
  CodebookType codebook_type = CodebookType::kFloat32;
};

// The attributes the decoder reads, and the stored matrix's [rows, cols].
struct LayerAttributes {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t num_entries = 0;
  int64_t index_bits = 0;
  std::vector<int64_t> stream_ids;  // codebook, codes, gaps, code_lengths[, row_scales]
};

// Format version 3 and later: `given.header` is the whole side file, and each stream is
// the slice of it that its TOC entry (`stream_ids`) names. Returns `given` with those
// slices filled in (the header stays the whole file), after validating the header; throws
// DecodeError when the node also gives a stream of its own, when a stream id is out of
// range, or when an entry lies outside the buffer. Versions 1-2: `given` unchanged.
LayerStreams resolve_streams(const LayerStreams& given, const std::vector<int64_t>& stream_ids);

// Validates everything listed in docs/format.md, "Validation" (attributes, header and
// TOC, each stream against its TOC entry, the Huffman streams and positions), then
// decodes the weight. Throws dc_onnx::DecodeError on any defect, never reads outside
// the given ranges.
CsrMatrix decode_layer(const LayerStreams& streams, const LayerAttributes& attrs);

}  // namespace dc_onnx
