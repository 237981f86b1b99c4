// Slicing-by-8 CRC-32 (reflected polynomial 0xEDB88320): eight table look-ups per
// 8 input bytes, tables built at compile time.
#include "crc32.h"

#include <array>

namespace dc_onnx {
namespace {

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    t[0][i] = c;
  }
  for (size_t s = 1; s < 8; ++s)
    for (size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  return t;
}

constexpr Tables kTables = make_tables();

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) noexcept {
  uint32_t c = ~crc;
  // Bytes are combined explicitly (little-endian order), so no unaligned loads.
  while (size >= 8) {
    const uint32_t lo = c ^ (uint32_t{data[0]} | uint32_t{data[1]} << 8 |
                             uint32_t{data[2]} << 16 | uint32_t{data[3]} << 24);
    c = kTables[7][lo & 0xFFu] ^ kTables[6][(lo >> 8) & 0xFFu] ^
        kTables[5][(lo >> 16) & 0xFFu] ^ kTables[4][lo >> 24] ^ kTables[3][data[4]] ^
        kTables[2][data[5]] ^ kTables[1][data[6]] ^ kTables[0][data[7]];
    data += 8;
    size -= 8;
  }
  while (size--) c = (c >> 8) ^ kTables[0][(c ^ *data++) & 0xFFu];
  return ~c;
}

}  // namespace dc_onnx
