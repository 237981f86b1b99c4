#include "huffman.h"

#include <cstring>
#include <string>

#include "decode_error.h"

namespace dc_onnx {

HuffmanTable::HuffmanTable(const uint8_t* lengths, size_t num_symbols, uint64_t num_entries,
                           const char* name)
    : name_(name) {
  const std::string what = std::string(name) + " code lengths: ";
  uint32_t kraft = 0;  // sum of 2^(12 - len): at most 256 * 2^11, no overflow
  size_t used = 0;
  for (size_t s = 0; s < num_symbols; ++s) {
    const unsigned len = lengths[s];
    if (len > kMaxCodeLen)
      fail_decode(what + "symbol " + std::to_string(s) + " has length " + std::to_string(len) +
                  " (maximum 12)");
    if (len != 0) {
      kraft += 1u << (kMaxCodeLen - len);
      ++used;
    }
  }
  if (kraft > (1u << kMaxCodeLen)) fail_decode(what + "Kraft sum above 1 (not a prefix code)");
  if (num_entries > 0 && used == 0)
    fail_decode(what + "the stream has entries but no symbol has a code");

  // Canonical assignment as in DEFLATE; each code of length L fills 2^(12-L) slots.
  uint32_t code = 0;
  for (unsigned len = 1; len <= kMaxCodeLen; ++len) {
    for (size_t s = 0; s < num_symbols; ++s) {
      if (lengths[s] != len) continue;
      const uint32_t first = code << (kMaxCodeLen - len);
      const uint32_t span = 1u << (kMaxCodeLen - len);
      const auto entry = static_cast<uint16_t>(len << 8 | s);
      for (uint32_t i = 0; i < span; ++i) table_[first + i] = entry;
      ++code;
    }
    code <<= 1;
  }
  // A further code is taken only when all its bits are among the 12 looked at; the bits
  // shifted in past the pattern are zeros, so a code reaching them is not taken.
  constexpr uint32_t mask = (1u << kMaxCodeLen) - 1;
  for (uint32_t bits = 0; bits <= mask; ++bits) {
    uint32_t len = 0;
    uint32_t n = 0;
    uint32_t symbols = 0;
    while (n < 3) {
      const uint16_t next = table_[(bits << len) & mask];
      const unsigned next_len = next >> 8;
      if (next_len == 0 || len + next_len > kMaxCodeLen) break;
      symbols |= uint32_t{next & 0xFFu} << (8 * n);
      len += next_len;
      ++n;
    }
    multi_[bits] = n == 0 ? 0u : len | n << 6 | symbols << 8;  // len <= 12 < 64
  }
}

namespace {

// Look-ups per block: a refill leaves >= 56 bits in `buf`, four codes take at most 48.
constexpr size_t kLookups = 4;
// Symbols a block may need room for: 3 per look-up, and the last store writes 4 bytes.
constexpr size_t kBlockRoom = 3 * kLookups + 1;

// Writes the three symbol bytes of a multi-symbol entry (the fourth byte written is
// overwritten by the next look-up, or lies within the room a block keeps).
inline void store_symbols(uint8_t* out, uint32_t entry) {
  const uint32_t symbols = entry >> 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  std::memcpy(out, &symbols, sizeof symbols);
#else
  out[0] = static_cast<uint8_t>(symbols);
  out[1] = static_cast<uint8_t>(symbols >> 8);
  out[2] = static_cast<uint8_t>(symbols >> 16);
#endif
}

}  // namespace

// The hot loop's state, small enough for the compiler to keep in registers.
struct HuffmanState {
  uint64_t buf = 0;    // next bits of the stream, MSB-aligned; zeros past the end
  unsigned nbits = 0;  // bits of `buf` filled: bits consumed = 8 * pos - nbits
  size_t pos = 0;      // next byte to load (may run past nbytes: those load as 0)
  size_t i = 0;        // symbols decoded
};

namespace {


// Whether a block may run: its 8-byte refill stays inside the stream (so its <= 48 bits
// are all stream bits: no truncation to check) and `out` has room for 13 symbols.
inline bool block_fits(const HuffmanStream& c, const HuffmanState& s) {
  return s.pos + 8 <= c.nbytes && c.count - s.i >= kBlockRoom;
}

// Refills `buf` to >= 56 bits with one 8-byte load, then decodes 4 look-ups of 1-3
// symbols each. Returns false when a look-up met a bit pattern that is no code: that one
// and the later ones (which read the same bits) consumed nothing.
__attribute__((always_inline)) inline bool block(const uint32_t* multi, const uint8_t* data,
                                                 uint8_t* out, HuffmanState& s) {
  // Whole bytes up to 56..63 bits. Bits of the next byte that also land in `buf` are the
  // same ones the next refill ORs in again.
  uint64_t word;
  std::memcpy(&word, data + s.pos, sizeof word);
  s.buf |= __builtin_bswap64(word) >> s.nbits;
  s.pos += (63 - s.nbits) >> 3;
  s.nbits |= 56;
  uint32_t entry = 0;
  for (size_t k = 0; k < kLookups; ++k) {
    entry = multi[s.buf >> (64 - kMaxCodeLen)];
    store_symbols(out + s.i, entry);
    s.i += (entry >> 6) & 3u;
    const unsigned len = entry & 63u;  // the shift takes it as is: no extra step
    s.buf <<= len;
    s.nbits -= len;
  }
  return entry != 0;  // an entry of 0 consumes nothing, so all later ones are 0 too
}

inline uint64_t consumed_bits(const HuffmanState& s) { return uint64_t{s.pos} * 8 - s.nbits; }

[[noreturn]] void fail_not_a_code(const char* name, uint64_t bit) {
  fail_decode(std::string(name) + " stream: bit pattern at bit " + std::to_string(bit) +
              " is not a code");
}

}  // namespace

void HuffmanTable::finish(const HuffmanStream& c, HuffmanState s) const {
  while (block_fits(c, s)) {
    if (!block(multi_.data(), c.data, c.out, s)) fail_not_a_code(name_, consumed_bits(s));
  }
  // Near the end of the stream or of `out`: one symbol per look-up, every check.
  const std::string what = std::string(name_) + " stream: ";
  const uint64_t total_bits = uint64_t{c.nbytes} * 8;
  while (s.i < c.count) {
    if (s.pos + 8 <= c.nbytes) {
      uint64_t word;
      std::memcpy(&word, c.data + s.pos, sizeof word);
      s.buf |= __builtin_bswap64(word) >> s.nbits;
      s.pos += (63 - s.nbits) >> 3;
      s.nbits |= 56;
    } else {
      while (s.nbits <= 56) {
        const uint64_t byte = s.pos < c.nbytes ? c.data[s.pos] : 0;
        s.buf |= byte << (56 - s.nbits);
        ++s.pos;
        s.nbits += 8;
      }
    }
    const size_t batch_end = c.count - s.i < kLookups ? c.count : s.i + kLookups;
    for (; s.i < batch_end; ++s.i) {
      const uint16_t entry = table_[s.buf >> (64 - kMaxCodeLen)];
      const unsigned len = entry >> 8;
      const uint64_t consumed = consumed_bits(s);
      if (len == 0) {
        if (consumed + kMaxCodeLen > total_bits)
          fail_decode(what + "ends after " + std::to_string(s.i) + " of " +
                      std::to_string(c.count) + " symbols (truncated)");
        fail_not_a_code(name_, consumed);
      }
      if (consumed + len > total_bits)
        fail_decode(what + "ends after " + std::to_string(s.i) + " of " +
                    std::to_string(c.count) + " symbols (truncated)");
      c.out[s.i] = static_cast<uint8_t>(entry & 0xFFu);
      s.buf <<= len;
      s.nbits -= len;
    }
  }
  const uint64_t consumed = consumed_bits(s);
  const uint64_t used_bytes = (consumed + 7) / 8;
  if (used_bytes != c.nbytes)
    fail_decode(what + std::to_string(c.nbytes - used_bytes) +
                " trailing bytes after the last symbol");
  // Each refill leaves >= 56 bits and at most 48 are consumed before the next, so >= 8
  // loaded bits remain: the (< 8) pad bits of the last byte are in `buf`.
  const auto pad = static_cast<unsigned>(used_bytes * 8 - consumed);
  if (pad != 0 && (s.buf >> (64 - pad)) != 0) fail_decode(what + "non-zero padding bits");
}

void HuffmanTable::decode(const uint8_t* data, size_t nbytes, uint8_t* out, size_t count) const {
  finish(HuffmanStream{data, nbytes, out, count}, HuffmanState{});
}

void decode_pair(const HuffmanTable& a, const HuffmanStream& ca, const HuffmanTable& b,
                 const HuffmanStream& cb) {
  HuffmanState sa, sb;
  // Two independent chains of look-ups: each waits only on its own previous length.
  while (block_fits(ca, sa) && block_fits(cb, sb)) {
    const bool ok_a = block(a.multi_.data(), ca.data, ca.out, sa);
    const bool ok_b = block(b.multi_.data(), cb.data, cb.out, sb);
    if (!ok_a) fail_not_a_code(a.name_, consumed_bits(sa));
    if (!ok_b) fail_not_a_code(b.name_, consumed_bits(sb));
  }
  a.finish(ca, sa);
  b.finish(cb, sb);
}

}  // namespace dc_onnx
