// CRC-32 with the zlib/PNG polynomial (what Python's zlib.crc32 computes), used to
// check the side-file TOC and every stream before decoding.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dc_onnx {

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0) noexcept;

}  // namespace dc_onnx
