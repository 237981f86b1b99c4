#include "huffman.h"

#include <algorithm>
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

// Where a decoding stands.
struct HuffmanState {
  uint64_t buf = 0;    // next bits of the stream, MSB-aligned; zeros past the end
  unsigned nbits = 0;  // bits of `buf` filled: bits consumed = 8 * pos - nbits
  size_t pos = 0;      // next byte to load (may run past nbytes: those load as 0)
  size_t i = 0;        // symbols decoded
};

namespace {

// The fast loop's state of one stream: pointers rather than base and index, and nothing
// the loop does not need, so that two streams' fit in the registers.
struct Lane {
  const uint32_t* multi;
  const uint8_t* in;  // next byte to load
  uint8_t* out;       // next symbol
  uint64_t buf;
  uint32_t nbits;  // its low 6 bits count the bits of `buf` filled (see `block`)
};

Lane lane(const uint32_t* multi, const HuffmanStream& c, const HuffmanState& s) {
  return {multi, c.data + s.pos, c.out + s.i, s.buf, s.nbits};
}

HuffmanState state(const HuffmanStream& c, const Lane& l) {
  return {l.buf, l.nbits & 63u, static_cast<size_t>(l.in - c.data),
          static_cast<size_t>(l.out - c.out)};
}

// How many blocks may run without a check: each refill loads 8 bytes inside the stream
// (so the <= 48 bits a block takes are stream bits: no truncation to check) and moves on
// at most 7; each block writes at most 12 symbols and needs room for 13.
size_t safe_blocks(const HuffmanStream& c, const Lane& l) {
  const auto in_left = static_cast<size_t>(c.data + c.nbytes - l.in);
  const auto out_left = static_cast<size_t>(c.out + c.count - l.out);
  if (in_left < 8 || out_left < kBlockRoom) return 0;
  const size_t by_in = (in_left - 8) / 7 + 1;
  const size_t by_out = (out_left - kBlockRoom) / (3 * kLookups) + 1;
  return by_in < by_out ? by_in : by_out;
}

// Refills `buf` to >= 56 bits with one 8-byte load, then makes 4 look-ups of 1-3 symbols
// each. Returns false when a look-up met a bit pattern that is no code: that one and the
// later ones (which read the same bits) consumed nothing, so the lane stays there.
__attribute__((always_inline)) inline bool block(Lane& l) {
  // Whole bytes up to 56..63 bits. Bits of the next byte that also land in `buf` are the
  // same ones the next refill ORs in again.
  l.nbits &= 63u;
  uint64_t word;
  std::memcpy(&word, l.in, sizeof word);
  l.buf |= __builtin_bswap64(word) >> l.nbits;
  l.in += (63 - l.nbits) >> 3;
  l.nbits |= 56;
  uint32_t entry = 0;
  for (size_t k = 0; k < kLookups; ++k) {
    entry = l.multi[l.buf >> (64 - kMaxCodeLen)];
    store_symbols(l.out, entry);
    l.out += (entry >> 6) & 3u;
    l.buf <<= entry & 63u;  // the shift takes the entry as is: no extra step
    // Subtracting the whole entry keeps the low 6 bits right (nbits stays in 0..63):
    // one step instead of two.
    l.nbits -= entry;
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
  Lane l = lane(multi_.data(), c, s);
  for (size_t n; (n = safe_blocks(c, l)) != 0;) {
    bool ok = true;
    do {
      ok &= block(l);
    } while (--n != 0);
    if (!ok) fail_not_a_code(name_, consumed_bits(state(c, l)));
  }
  s = state(c, l);
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
  Lane la = lane(a.multi_.data(), ca, HuffmanState{});
  Lane lb = lane(b.multi_.data(), cb, HuffmanState{});
  // Two independent chains of look-ups: each waits only on its own previous length.
  for (size_t n; (n = std::min(safe_blocks(ca, la), safe_blocks(cb, lb))) != 0;) {
    bool ok = true;
    do {
      ok &= block(la);
      ok &= block(lb);
    } while (--n != 0);
    if (!ok) break;  // `finish` stops at the lane that is stuck and names it
  }
  a.finish(ca, state(ca, la));
  b.finish(cb, state(cb, lb));
}

}  // namespace dc_onnx
