// The input format shared by the fuzz targets and their seed writer
// (scripts/fuzz_seeds.py): one compressed layer as node attributes plus a side file.
//
//   byte 0      flags: bit 0 = reseal the CRCs; bits 1-2 = op (0 Gemm, 1 MatMul, 2 Conv);
//               bit 3 = a bias input; bit 4 = non-finite values in X (kernel target)
//   byte 1      R, the number of attribute records
//   R records   u8 attribute id (kAttributeNames), u8 count, count x i64 little-endian
//   the rest    the side file (header, TOC, streams)
//
// Inputs 1-5 are cut from the side file the way ORT hands them to a kernel: the header
// bytes, then the TOC range of each stream id (clamped to the file; empty for an id
// outside the TOC). A file whose version field says 3 or more is handed whole as the
// header input, with no stream inputs, as format version 3 wires it. With bit 0 set, the harness rewrites every stream's CRC-32 and the
// TOC's before decoding, so mutations reach the Huffman and position checks instead of
// stopping at a CRC mismatch; without it the CRCs are checked as stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "crc32.h"
#include "decoder.h"
#include "side_file.h"

namespace dc_onnx_fuzz {

// Attribute ids of the records, in this order (scripts/fuzz_seeds.py has the same list).
// The last two are not attributes: the kernel target's run-time X and bias shapes.
inline const char* const kAttributeNames[] = {
    "weight_shape", "num_entries", "index_bits", "stream_ids", "group",   "kernel_shape",
    "strides",      "dilations",   "pads",       "auto_pad",   "transA",  "weight_side",
    "alpha",        "beta",        "x_shape",    "bias_shape"};
constexpr size_t kNumAttributes = sizeof kAttributeNames / sizeof kAttributeNames[0];

// auto_pad is carried as an index into these; the last is an invalid value.
inline const char* const kAutoPads[] = {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER", "FULL"};

inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

inline void store_u32(uint8_t* p, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

struct FuzzLayer {
  int op = 0;  // 0 Gemm, 1 MatMul, 2 Conv
  std::map<std::string, std::vector<int64_t>> ints;  // every attribute, as int64 values
  std::vector<uint8_t> file;                          // the side file (CRCs resealed)
  dc_onnx::Bytes header;
  dc_onnx::Bytes streams[5];  // codebook, codes, gaps, code_lengths, row_scales
  bool whole_file = false;    // version 3: `header` is the whole file, `streams` empty
};

// Parses fuzz bytes; false when they are too short for the fixed part.
inline bool parse_fuzz_input(const uint8_t* data, size_t size, FuzzLayer* out) {
  if (size < 2) return false;
  const uint8_t flags = data[0];
  out->op = ((flags >> 1) & 3) % 3;  // bits 1-2 only: bits 3-4 are other flags
  size_t pos = 2;
  for (unsigned r = 0; r < data[1]; ++r) {
    if (pos + 2 > size) return false;
    const size_t id = data[pos];
    const size_t count = data[pos + 1];
    pos += 2;
    if (pos + 8 * count > size) return false;
    std::vector<int64_t> values(count);
    for (size_t i = 0; i < count; ++i)
      values[i] = static_cast<int64_t>(load_u64(data + pos + 8 * i));
    pos += 8 * count;
    if (id < kNumAttributes) out->ints[kAttributeNames[id]] = std::move(values);
  }
  out->file.assign(data + pos, data + size);
  std::vector<uint8_t>& f = out->file;

  // The TOC as stored (no validation: that is the decoder's job), clamped to the file.
  size_t n_streams = 0;
  if (f.size() >= dc_onnx::kHeaderFixedSize)
    n_streams = (f[12] | size_t{f[13]} << 8 | size_t{f[14]} << 16 | size_t{f[15]} << 24);
  const size_t max_streams = f.size() < dc_onnx::kHeaderFixedSize
                                 ? 0
                                 : (f.size() - dc_onnx::kHeaderFixedSize) / dc_onnx::kTocEntrySize;
  const size_t toc_size = n_streams <= max_streams ? n_streams : max_streams;
  auto range = [&](size_t i, uint64_t* begin, uint64_t* end) {
    const uint8_t* e = f.data() + dc_onnx::kHeaderFixedSize + dc_onnx::kTocEntrySize * i;
    const uint64_t off = load_u64(e), len = load_u64(e + 8);
    *begin = off < f.size() ? off : f.size();
    *end = len <= f.size() - *begin ? *begin + len : f.size();
  };
  if (flags & 1) {
    for (size_t i = 0; i < toc_size; ++i) {
      uint64_t b = 0, e = 0;
      range(i, &b, &e);
      uint8_t* entry = f.data() + dc_onnx::kHeaderFixedSize + dc_onnx::kTocEntrySize * i;
      store_u32(entry + 24, dc_onnx::crc32(f.data() + b, e - b));
    }
    if (f.size() >= dc_onnx::kHeaderFixedSize)
      store_u32(f.data() + 16, dc_onnx::crc32(f.data() + dc_onnx::kHeaderFixedSize,
                                              dc_onnx::kTocEntrySize * toc_size));
  }
  // The header input: what n_streams says, or as much of it as the file holds.
  const size_t header_size =
      f.size() < dc_onnx::kHeaderFixedSize
          ? f.size()
          : dc_onnx::kHeaderFixedSize + dc_onnx::kTocEntrySize * toc_size;
  out->header = {f.data(), header_size};
  // Format version 3: the header input is the whole side file and the node gives no
  // stream inputs: the decoder slices them itself (resolve_streams).
  out->whole_file = dc_onnx::peek_format_version(f.data(), f.size()) >= dc_onnx::kWholeFileVersion;
  if (out->whole_file) {
    out->header = {f.data(), f.size()};
    for (auto& stream : out->streams) stream = {nullptr, 0};
    return true;
  }
  const auto ids = out->ints.find("stream_ids");
  for (size_t k = 0; k < 5; ++k) {
    out->streams[k] = {nullptr, 0};
    if (ids == out->ints.end() || k >= ids->second.size()) continue;
    const int64_t id = ids->second[k];
    if (id < 0 || static_cast<uint64_t>(id) >= toc_size) continue;
    uint64_t b = 0, e = 0;
    range(static_cast<size_t>(id), &b, &e);
    out->streams[k] = {f.data() + b, static_cast<size_t>(e - b)};
  }
  return true;
}

}  // namespace dc_onnx_fuzz
