// Canonical Huffman decoding (docs/format.md, "Canonical Huffman streams"): code
// lengths <= 12, so one 4096-entry table decodes any symbol with a single look-up.
// A second table decodes two symbols per look-up where both codes fit in the 12 bits
// looked at: each look-up waits for the previous one's length, so this halves the chain
// of dependent loads that bounds the decoder (gaps and 5-bit codes are mostly 2-6 bits).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace dc_onnx {

constexpr unsigned kMaxCodeLen = 12;

class HuffmanTable {
 public:
  // Builds the table from one code length per symbol (0 = unused). `name` labels
  // errors. `num_symbols` <= 256. Throws dc_onnx::DecodeError on a length above 12, a Kraft
  // sum above 1, or (when `num_entries` > 0) no used symbol at all.
  HuffmanTable(const uint8_t* lengths, size_t num_symbols, uint64_t num_entries,
               const char* name);

  // Decodes exactly `count` symbols from `nbytes` bytes into `out`. The stream must end
  // right after the last code, padded with zero bits. Never reads outside `data`.
  void decode(const uint8_t* data, size_t nbytes, uint8_t* out, size_t count) const;

 private:
  // Entry = (code length << 8) | symbol; length 0 marks a bit pattern that is no code.
  std::array<uint16_t, size_t{1} << kMaxCodeLen> table_{};
  // Entry = both lengths | first symbol << 8 | second symbol << 16 | symbols << 24, for
  // the codes that begin the 12-bit pattern; 0 symbols marks a pattern that is no code.
  std::array<uint32_t, size_t{1} << kMaxCodeLen> pair_{};
  const char* name_;
};

}  // namespace dc_onnx
