#include "side_file.h"

#include <cstring>
#include <string>

#include "crc32.h"
#include "decode_error.h"

namespace dc_onnx {
namespace {

constexpr uint8_t kMagic[8] = {'D', 'C', 'O', 'N', 'N', 'X', 'W', '\0'};

// Little-endian reads that work on any host and any alignment.
template <typename T>
T load_le(const uint8_t* p) noexcept {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v | static_cast<T>(T{p[i]} << (8 * i)));
  return v;
}

}  // namespace

const char* stream_name(StreamKind kind) noexcept {
  switch (kind) {
    case StreamKind::kCodebook: return "codebook";
    case StreamKind::kCodes: return "codes";
    case StreamKind::kGaps: return "gaps";
    case StreamKind::kCodeLengths: return "code_lengths";
    case StreamKind::kRowScales: return "row_scales";
  }
  return "unknown";
}

uint16_t peek_format_version(const uint8_t* data, size_t size) noexcept {
  return size < kHeaderFixedSize ? 0 : load_le<uint16_t>(data + 8);
}

std::vector<TocEntry> parse_header(const uint8_t* data, size_t size) {
  if (size < kHeaderFixedSize)
    fail_decode("side-file header too short (" + std::to_string(size) +
                " bytes, need at least 24)");
  if (std::memcmp(data, kMagic, sizeof kMagic) != 0)
    fail_decode("side-file header has a wrong magic (not a dc-onnx weight file?)");
  const auto version = load_le<uint16_t>(data + 8);
  if (version < kMinFormatVersion || version > kMaxFormatVersion)
    fail_decode("side-file format_version " + std::to_string(version) +
                " is not supported (this library reads versions " +
                std::to_string(kMinFormatVersion) + " to " + std::to_string(kMaxFormatVersion) +
                ")");
  if (load_le<uint16_t>(data + 10) != 0 || load_le<uint32_t>(data + 20) != 0)
    fail_decode("side-file header has non-zero reserved fields (side file corrupted?)");
  const uint64_t n_streams = load_le<uint32_t>(data + 12);
  const uint64_t expected = kHeaderFixedSize + kTocEntrySize * n_streams;
  const bool whole_file = version >= kWholeFileVersion;
  if (whole_file ? expected > size : expected != size)
    fail_decode(std::string(whole_file ? "side file" : "side-file header") + " is " +
                std::to_string(size) + " bytes but n_streams=" + std::to_string(n_streams) +
                " needs " + (whole_file ? "at least " : "") + std::to_string(expected));
  const uint8_t* toc_bytes = data + kHeaderFixedSize;
  if (crc32(toc_bytes, expected - kHeaderFixedSize) != load_le<uint32_t>(data + 16))
    fail_decode("side-file TOC CRC-32 mismatch (side file corrupted?)");

  std::vector<TocEntry> toc(static_cast<size_t>(n_streams));
  for (size_t i = 0; i < toc.size(); ++i) {
    const uint8_t* e = toc_bytes + i * kTocEntrySize;
    TocEntry& t = toc[i];
    t.offset = load_le<uint64_t>(e);
    t.nbytes = load_le<uint64_t>(e + 8);
    t.count = load_le<uint64_t>(e + 16);
    t.crc32 = load_le<uint32_t>(e + 24);
    t.kind = load_le<uint16_t>(e + 28);
    const std::string where = "side-file TOC entry " + std::to_string(i);
    if (load_le<uint16_t>(e + 30) != 0) fail_decode(where + " has a non-zero reserved field");
    if (t.kind < 1 || t.kind > 5)
      fail_decode(where + " has unknown kind " + std::to_string(t.kind));
    // Streams follow the header; offset + nbytes must not wrap around, and in a whole
    // side file they must end inside it.
    if (t.offset < expected || t.nbytes > UINT64_MAX - t.offset)
      fail_decode(where + " has an impossible offset/size");
    if (whole_file && t.offset + t.nbytes > size)
      fail_decode(where + " lies beyond the side file's " + std::to_string(size) +
                  " bytes (side file truncated?)");
  }
  return toc;
}

uint64_t check_stream(const std::vector<TocEntry>& toc, int64_t stream_id, StreamKind kind,
                      const uint8_t* data, size_t nbytes, uint64_t element_count) {
  const std::string name = std::string(stream_name(kind)) + " stream";
  if (stream_id < 0 || static_cast<uint64_t>(stream_id) >= toc.size())
    fail_decode(name + ": stream_ids value " + std::to_string(stream_id) +
                " is out of range (TOC has " + std::to_string(toc.size()) + " streams)");
  const TocEntry& t = toc[static_cast<size_t>(stream_id)];
  if (t.kind != static_cast<uint16_t>(kind))
    fail_decode(name + ": TOC entry " + std::to_string(stream_id) + " has kind " +
                std::to_string(t.kind) + ", expected " + std::to_string(static_cast<int>(kind)));
  if (t.nbytes != nbytes)
    fail_decode(name + " is " + std::to_string(nbytes) + " bytes but the TOC says " +
                std::to_string(t.nbytes) + " (side file truncated or mismatched?)");
  if (element_count != kCountCheckedLater && t.count != element_count)
    fail_decode(name + " holds " + std::to_string(element_count) + " elements but the TOC says " +
                std::to_string(t.count));
  if (crc32(data, nbytes) != t.crc32) fail_decode(name + " CRC-32 mismatch (side file corrupted?)");
  return t.count;
}

}  // namespace dc_onnx
