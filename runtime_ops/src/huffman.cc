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
  // A second code is taken only when all its bits are among the 12 looked at.
  for (uint32_t bits = 0; bits < table_.size(); ++bits) {
    const uint16_t first = table_[bits];
    const unsigned len1 = first >> 8;
    if (len1 == 0) continue;  // pair_ stays 0: no code
    const uint16_t second = table_[(bits << len1) & (table_.size() - 1)];
    const unsigned len2 = second >> 8;
    const bool two = len2 != 0 && len1 + len2 <= kMaxCodeLen;
    pair_[bits] = (len1 + (two ? len2 : 0u)) | (first & 0xFFu) << 8 |
                  (two ? (second & 0xFFu) << 16 : 0u) | (two ? 2u : 1u) << 24;
  }
}

void HuffmanTable::decode(const uint8_t* data, size_t nbytes, uint8_t* out, size_t count) const {
  const std::string what = std::string(name_) + " stream: ";
  const uint64_t total_bits = uint64_t{nbytes} * 8;
  uint64_t consumed = 0;  // bits taken by decoded codes
  uint64_t buf = 0;       // next bits of the stream, MSB-aligned; zeros past the end
  unsigned nbits = 0;     // bits of `buf` that have been filled
  size_t pos = 0;         // next byte to load (may run past nbytes: those load as 0)
  size_t i = 0;
  while (i < count) {
    if (pos + 8 <= nbytes) {
      // Refill with one 8-byte load: whole bytes up to 56..63 bits. Bits of the next byte
      // that also land in `buf` are the same ones the next refill ORs in again.
      uint64_t word;
      std::memcpy(&word, data + pos, sizeof word);
      buf |= __builtin_bswap64(word) >> nbits;
      pos += (63 - nbits) >> 3;
      nbits |= 56;
    } else {
      while (nbits <= 56) {
        const uint64_t byte = pos < nbytes ? data[pos] : 0;
        buf |= byte << (56 - nbits);
        ++pos;
        nbits += 8;
      }
    }
    // >= 56 bits in `buf`: four look-ups of at most 12 bits each, 1-2 symbols each. Far
    // from the end of the stream they cannot run past it, so only invalid patterns need
    // checking. Each look-up writes two symbols; a second one not decoded is overwritten.
    if (count - i >= 8 && consumed + 4 * kMaxCodeLen <= total_bits) {
      bool valid = true;
      for (size_t k = 0; k < 4; ++k) {
        const uint32_t entry = pair_[buf >> (64 - kMaxCodeLen)];
        const unsigned len = entry & 63u;  // the shift takes it as is: no extra step
        const unsigned n = entry >> 24;
        valid &= n != 0;
        out[i] = static_cast<uint8_t>(entry >> 8);
        out[i + 1] = static_cast<uint8_t>(entry >> 16);
        i += n;
        buf <<= len;
        nbits -= len;
        consumed += len;
      }
      if (valid) continue;
      // The first invalid look-up consumed nothing; later ones read the same bits again.
      fail_decode(what + "bit pattern at bit " + std::to_string(consumed) + " is not a code");
    }
    const size_t batch_end = count - i < 4 ? count : i + 4;
    for (; i < batch_end; ++i) {
      const uint16_t entry = table_[buf >> (64 - kMaxCodeLen)];
      const unsigned len = entry >> 8;
      if (len == 0) {
        if (consumed + kMaxCodeLen > total_bits)
          fail_decode(what + "ends after " + std::to_string(i) + " of " + std::to_string(count) +
                      " symbols (truncated)");
        fail_decode(what + "bit pattern at bit " + std::to_string(consumed) + " is not a code");
      }
      if (consumed + len > total_bits)
        fail_decode(what + "ends after " + std::to_string(i) + " of " + std::to_string(count) +
                    " symbols (truncated)");
      out[i] = static_cast<uint8_t>(entry & 0xFFu);
      buf <<= len;
      nbits -= len;
      consumed += len;
    }
  }
  const uint64_t used_bytes = (consumed + 7) / 8;
  if (used_bytes != nbytes)
    fail_decode(what + std::to_string(nbytes - used_bytes) +
                " trailing bytes after the last symbol");
  // Each refill leaves >= 56 bits and at most 48 are consumed before the next, so >= 8
  // loaded bits remain: the (< 8) pad bits of the last byte are in `buf`.
  const auto pad = static_cast<unsigned>(used_bytes * 8 - consumed);
  if (pad != 0 && (buf >> (64 - pad)) != 0) fail_decode(what + "non-zero padding bits");
}

}  // namespace dc_onnx
