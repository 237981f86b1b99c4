// The side-file header and its table of contents (docs/format.md, "Side file"), and
// the checks that tie one stream input tensor to its TOC entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dc_onnx {

enum class StreamKind : uint16_t {
  kCodebook = 1,
  kCodes = 2,
  kGaps = 3,
  kCodeLengths = 4,
  kRowScales = 5,  // format version 2
};

const char* stream_name(StreamKind kind) noexcept;

struct TocEntry {
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  uint64_t count = 0;
  uint32_t crc32 = 0;
  uint16_t kind = 0;
};

constexpr size_t kHeaderFixedSize = 24;
constexpr size_t kTocEntrySize = 32;
// Versions this library reads (docs/format.md says what each one added); it writes none.
constexpr uint16_t kMinFormatVersion = 1;
constexpr uint16_t kMaxFormatVersion = 3;
// From this version on, the header input is the whole side file (header, TOC, streams)
// and each stream is the slice of it its TOC entry names; before, the header alone.
constexpr uint16_t kWholeFileVersion = 3;

// The format_version field, unchecked (0 when `size` cannot hold it): how to read the
// header input before parse_header validates it.
uint16_t peek_format_version(const uint8_t* data, size_t size) noexcept;

// Parses and validates the header bytes (magic, version, reserved fields, size, TOC
// CRC). Versions 1-2: `size` is the header's own; version 3: the whole side file, and
// every TOC entry must lie in it after the header. Throws dc_onnx::DecodeError on any
// defect.
std::vector<TocEntry> parse_header(const uint8_t* data, size_t size);

// `element_count` value for a stream whose count is only known after decoding.
constexpr uint64_t kCountCheckedLater = UINT64_MAX;

// Checks a stream tensor against TOC entry `stream_id`: id in range, kind, byte size,
// element count (unless kCountCheckedLater) and CRC-32; returns the TOC's count.
// Throws dc_onnx::DecodeError on any mismatch.
uint64_t check_stream(const std::vector<TocEntry>& toc, int64_t stream_id, StreamKind kind,
                      const uint8_t* data, size_t nbytes, uint64_t element_count);

}  // namespace dc_onnx
