// Tests of the Huffman decoder's fast paths (huffman.h) against a bit-by-bit reference
// decoder written here from docs/format.md: random canonical codes (1- to 12-bit codes,
// complete and incomplete, 1 to 256 symbols), random streams of 0 to 20000 symbols, so
// that streams end at every point of a look-up block. Checks that `decode` gives the
// reference's symbols or its exact error message, that `decode_pair` gives the same
// symbols as two `decode`s and fails exactly when one of them does, on intact streams and
// on streams with flipped bytes, cut or added bytes. Usage: test_huffman [seed].
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "decode_error.h"
#include "huffman.h"

namespace {

using dc_onnx::DecodeError;
using dc_onnx::HuffmanStream;
using dc_onnx::HuffmanTable;
using dc_onnx_test::g_checks;
using dc_onnx_test::g_failures;

// A canonical prefix code: length and code per symbol (DEFLATE's assignment).
struct Code {
  std::vector<uint8_t> lengths;
  std::vector<uint32_t> codes;
};

Code canonical(std::vector<uint8_t> lengths) {
  Code c{std::move(lengths), {}};
  c.codes.assign(c.lengths.size(), 0);
  uint32_t next = 0;
  for (unsigned len = 1; len <= 12; ++len) {
    for (size_t s = 0; s < c.lengths.size(); ++s)
      if (c.lengths[s] == len) c.codes[s] = next++;
    next <<= 1;
  }
  return c;
}

// Random lengths with a Kraft sum <= 1. `longest` bounds the lengths drawn (12 gives
// maximal codes); `complete` then fills the code tree so that every pattern is a code.
std::vector<uint8_t> random_lengths(std::mt19937& rng, size_t symbols, unsigned longest,
                                    bool complete) {
  std::vector<uint8_t> len(symbols);
  std::uniform_int_distribution<unsigned> pick(1, longest);
  uint32_t kraft = 0;  // in units of 2^-12
  for (auto& l : len) {
    l = static_cast<uint8_t>(pick(rng));
    kraft += 1u << (12 - l);
  }
  // Lengthen (then drop) codes until the sum is <= 1.
  for (size_t s = 0; kraft > 4096u; s = (s + 1) % symbols) {
    if (len[s] == 0) continue;
    kraft -= 1u << (12 - len[s]);
    if (len[s] < 12) {
      ++len[s];
      kraft += 1u << (12 - len[s]);
    } else if (std::count_if(len.begin(), len.end(), [](uint8_t x) { return x != 0; }) > 1) {
      len[s] = 0;
    } else {
      kraft += 1u << (12 - len[s]);
    }
  }
  // Shorten codes while the sum stays <= 1, for a complete code.
  for (bool changed = complete; changed;) {
    changed = false;
    for (auto& l : len) {
      if (l > 1 && kraft + (1u << (12 - l)) <= 4096u) {
        kraft += 1u << (12 - l);  // halving the length doubles the share
        --l;
        changed = true;
      }
    }
  }
  return len;
}

// Symbols drawn with a skew, so that short codes come up often (as gaps do).
std::vector<uint8_t> random_symbols(std::mt19937& rng, const Code& c, size_t count) {
  std::vector<uint8_t> used;
  for (size_t s = 0; s < c.lengths.size(); ++s)
    if (c.lengths[s] != 0) used.push_back(static_cast<uint8_t>(s));
  std::vector<uint8_t> out(count);
  std::geometric_distribution<size_t> geo(0.3);
  std::uniform_int_distribution<size_t> uni(0, used.size() - 1);
  std::bernoulli_distribution skew(0.5);
  for (auto& s : out) s = used[skew(rng) ? geo(rng) % used.size() : uni(rng)];
  return out;
}

std::vector<uint8_t> encode(const Code& c, const std::vector<uint8_t>& symbols) {
  std::vector<uint8_t> out;
  uint64_t acc = 0;
  unsigned n = 0;
  for (uint8_t s : symbols) {
    acc = acc << c.lengths[s] | c.codes[s];
    n += c.lengths[s];
    while (n >= 8) {
      out.push_back(static_cast<uint8_t>(acc >> (n - 8)));
      n -= 8;
    }
  }
  if (n > 0) out.push_back(static_cast<uint8_t>(acc << (8 - n)));
  return out;
}

// The reference: one bit at a time; returns "" or the error message `decode` must give.
std::string reference_decode(const Code& c, const char* name, const std::vector<uint8_t>& data,
                             size_t count, std::vector<uint8_t>& out) {
  const std::string what = std::string(name) + " stream: ";
  const uint64_t total = uint64_t{data.size()} * 8;
  auto bit = [&](uint64_t p) -> uint32_t {
    return p < total ? (uint32_t{data[p >> 3]} >> (7 - (p & 7))) & 1u : 0u;
  };
  // symbol_of[len][code]: the symbol with that code, or -1.
  std::vector<std::vector<int>> symbol_of(13, std::vector<int>(4096, -1));
  for (size_t s = 0; s < c.lengths.size(); ++s)
    if (c.lengths[s] != 0) symbol_of[c.lengths[s]][c.codes[s]] = static_cast<int>(s);
  uint64_t consumed = 0;
  out.clear();
  for (size_t i = 0; i < count; ++i) {
    uint32_t v = 0;
    int found = -1;
    unsigned len = 0;
    for (len = 1; len <= 12 && found < 0; ++len) {
      v = v << 1 | bit(consumed + len - 1);
      found = symbol_of[len][v];
    }
    --len;
    const std::string truncated = what + "ends after " + std::to_string(i) + " of " +
                                  std::to_string(count) + " symbols (truncated)";
    if (found < 0)
      return consumed + 12 > total ? truncated
                                   : what + "bit pattern at bit " + std::to_string(consumed) +
                                         " is not a code";
    if (consumed + len > total) return truncated;
    out.push_back(static_cast<uint8_t>(found));
    consumed += len;
  }
  const uint64_t used = (consumed + 7) / 8;
  if (used != data.size())
    return what + std::to_string(data.size() - used) + " trailing bytes after the last symbol";
  for (uint64_t p = consumed; p < used * 8; ++p)
    if (bit(p)) return what + "non-zero padding bits";
  return "";
}

// `decode` into a buffer of exactly `count` bytes; "" or the error message.
std::string library_decode(const HuffmanTable& t, const std::vector<uint8_t>& data, size_t count,
                           std::vector<uint8_t>& out) {
  out.assign(count, 0);
  try {
    t.decode(data.data(), data.size(), out.data(), count);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "";
}

struct Case {
  Code code;
  std::vector<uint8_t> symbols;
  std::vector<uint8_t> data;
};

Case random_case(std::mt19937& rng) {
  std::uniform_int_distribution<size_t> sym_count(1, 256);
  std::uniform_int_distribution<unsigned> longest(1, 12);
  std::bernoulli_distribution complete(0.7);
  // Mostly short streams (every end of a block), some long ones (the steady loop).
  std::uniform_int_distribution<size_t> short_count(0, 64);
  std::uniform_int_distribution<size_t> long_count(65, 20000);
  std::bernoulli_distribution is_short(0.6);
  Case k;
  const size_t symbols = sym_count(rng);
  k.code = canonical(random_lengths(rng, symbols, symbols == 1 ? 1 : longest(rng), complete(rng)));
  k.symbols = random_symbols(rng, k.code, is_short(rng) ? short_count(rng) : long_count(rng));
  k.data = encode(k.code, k.symbols);
  return k;
}

// A damaged copy: flipped bytes, a cut end, or extra bytes (up to 40 zero bytes: with
// a short all-zero code they decode as many symbols, so the fast loops meet the end of
// `out` long before the end of the stream).
std::vector<uint8_t> damage(std::mt19937& rng, std::vector<uint8_t> data) {
  std::uniform_int_distribution<int> kind(0, 2);
  const int k = kind(rng);
  if (k == 0 && !data.empty()) {
    std::uniform_int_distribution<size_t> at(0, data.size() - 1);
    std::uniform_int_distribution<int> value(1, 255);
    data[at(rng)] ^= static_cast<uint8_t>(value(rng));
  } else if (k == 1 && !data.empty()) {
    std::uniform_int_distribution<size_t> keep(0, data.size() - 1);
    data.resize(keep(rng));
  } else {
    std::uniform_int_distribution<int> extra(1, 40);
    data.resize(data.size() + static_cast<size_t>(extra(rng)), 0);
  }
  return data;
}

// `decode` against the reference, then `decode_pair` against two `decode`s.
void check_pair(const Case& a, const std::vector<uint8_t>& a_data, const Case& b,
                const std::vector<uint8_t>& b_data) {
  const HuffmanTable ta(a.code.lengths.data(), a.code.lengths.size(), a.symbols.size(), "gaps");
  const HuffmanTable tb(b.code.lengths.data(), b.code.lengths.size(), b.symbols.size(), "codes");
  std::vector<uint8_t> ref_a, ref_b, out_a, out_b;
  const std::string ea = reference_decode(a.code, "gaps", a_data, a.symbols.size(), ref_a);
  const std::string eb = reference_decode(b.code, "codes", b_data, b.symbols.size(), ref_b);
  const std::string la = library_decode(ta, a_data, a.symbols.size(), out_a);
  const std::string lb = library_decode(tb, b_data, b.symbols.size(), out_b);
  CHECK(la == ea);
  CHECK(lb == eb);
  if (la != ea) std::fprintf(stderr, "  decode: '%s', reference: '%s'\n", la.c_str(), ea.c_str());
  if (ea.empty()) CHECK(out_a == ref_a);
  if (eb.empty()) CHECK(out_b == ref_b);

  std::vector<uint8_t> pair_a(a.symbols.size()), pair_b(b.symbols.size());
  bool failed = false;
  try {
    decode_pair(ta, HuffmanStream{a_data.data(), a_data.size(), pair_a.data(), pair_a.size()}, tb,
                HuffmanStream{b_data.data(), b_data.size(), pair_b.data(), pair_b.size()});
  } catch (const DecodeError& e) {
    failed = true;
    // The error is one of the two streams' own.
    CHECK(std::string(e.what()) == ea || std::string(e.what()) == eb);
  }
  CHECK(failed == !(ea.empty() && eb.empty()));
  if (!failed) {
    CHECK(pair_a == ref_a);
    CHECK(pair_b == ref_b);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned seed = argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 1;
  std::mt19937 rng(seed);
  for (int round = 0; round < 400; ++round) {
    const Case a = random_case(rng);
    const Case b = random_case(rng);
    check_pair(a, a.data, b, b.data);
    check_pair(b, b.data, a, a.data);
    check_pair(a, damage(rng, a.data), b, b.data);
    check_pair(a, a.data, b, damage(rng, b.data));
  }
  // Fixed codes at the limits: 256 symbols of 8 bits (complete); lengths 1, 2, ..., 11,
  // 12, 12 (complete, the longest chain); one 1-bit code and 255 of 12 bits (incomplete).
  std::vector<uint8_t> chain;
  for (uint8_t l = 1; l <= 12; ++l) chain.push_back(l);
  chain.push_back(12);
  std::vector<uint8_t> deep(256, 12);
  deep[0] = 1;
  for (const auto& lengths : {std::vector<uint8_t>(256, 8), chain, deep}) {
    Case k;
    k.code = canonical(lengths);
    for (size_t count : {size_t{0}, size_t{1}, size_t{13}, size_t{14}, size_t{5000}}) {
      k.symbols = random_symbols(rng, k.code, count);
      k.data = encode(k.code, k.symbols);
      check_pair(k, k.data, k, k.data);
      for (int i = 0; i < 50; ++i) check_pair(k, damage(rng, k.data), k, k.data);
    }
  }
  std::printf("test_huffman: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
