// Canonical Huffman decoding (docs/format.md, "Canonical Huffman streams"): code
// lengths <= 12, so one 4096-entry table decodes any symbol with a single look-up.
//
// Speed: each look-up waits for the previous one's length (load, then shift), a chain of
// about 7 cycles that bounds a decoder of one stream. Two things shorten it per symbol:
// a second table decodes up to three symbols per look-up where their codes fit in the 12
// bits looked at (gaps and 4-5 bit codes are mostly 2-6 bits), and `decode_pair` runs
// the look-ups of two streams (a weight's gaps and codes) interleaved, two independent
// chains the core executes side by side.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace dc_onnx {

constexpr unsigned kMaxCodeLen = 12;

// decode_pair exists (the decode-rate benchmark builds against older decoders too).
#define DC_ONNX_HUFFMAN_DECODE_PAIR 1

// One stream to decode: `count` symbols from `nbytes` bytes into `out`.
struct HuffmanStream {
  const uint8_t* data;
  size_t nbytes;
  uint8_t* out;
  size_t count;
};

struct HuffmanState;  // where a decoding stands (huffman.cc)

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

  // Decodes two streams, as `decode` does each, with their look-ups interleaved. The
  // same symbols; on a damaged stream it throws, but not necessarily the error that
  // `a.decode` then `b.decode` would give (which of the two fails first differs).
  friend void decode_pair(const HuffmanTable& a, const HuffmanStream& sa,
                          const HuffmanTable& b, const HuffmanStream& sb);

 private:
  // Decodes the rest of `c` from `s`: look-ups in the multi-symbol table, then in the
  // single-symbol one with every check, then the end-of-stream checks.
  void finish(const HuffmanStream& c, HuffmanState s) const;

  // Entry = (code length << 8) | symbol; length 0 marks a bit pattern that is no code.
  std::array<uint16_t, size_t{1} << kMaxCodeLen> table_{};
  // Entry = total length (bits 0-5) | symbols (bits 6-7, 1-3) | the symbols (bits 8-31,
  // the first lowest), for the codes that begin the 12-bit pattern and end within it;
  // 0 marks a pattern that is no code.
  std::array<uint32_t, size_t{1} << kMaxCodeLen> multi_{};
  const char* name_;
};

void decode_pair(const HuffmanTable& a, const HuffmanStream& sa, const HuffmanTable& b,
                 const HuffmanStream& sb);

}  // namespace dc_onnx
