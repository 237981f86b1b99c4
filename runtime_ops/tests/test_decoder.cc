// Tests of the standalone decoder (decoder.h), built without ORT headers: decodes the
// layers of a real side file (tests/data/seed.dcw, written by scripts/decoder_seed.py as
// format version 1; read as version 3 too, where one buffer holds every stream) and
// compares them bit for bit with the Python reference decoder's weights
// (tests/data/seed.txt), then checks that truncations, byte flips and bad attributes
// are refused with a DecodeError. Usage: test_decoder <directory with seed.*>.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "crc32.h"
#include "decode_error.h"
#include "decoder.h"
#include "side_file.h"

namespace {

using dc_onnx::Bytes;
using dc_onnx::CsrMatrix;
using dc_onnx::DecodeError;
using dc_onnx::LayerAttributes;
using dc_onnx::LayerStreams;
using dc_onnx_test::g_checks;
using dc_onnx_test::g_failures;

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// One layer of seed.txt: its attributes and the reference weights, row-major.
struct Layer {
  std::string name;
  LayerAttributes attrs;
  std::vector<float> expected;
};

// seed.txt: per layer, a line "layer <name> <rows> <cols> <num_entries> <index_bits>
// <4 stream ids>" then rows*cols weights as hexadecimal floats.
std::vector<Layer> read_layers(const std::string& path) {
  std::ifstream f(path);
  std::vector<Layer> layers;
  std::string word;
  while (f >> word) {
    if (word != "layer") {
      std::fprintf(stderr, "%s: expected 'layer', got '%s'\n", path.c_str(), word.c_str());
      std::exit(2);
    }
    Layer l;
    LayerAttributes& a = l.attrs;
    a.stream_ids.resize(4);
    f >> l.name >> a.rows >> a.cols >> a.num_entries >> a.index_bits >> a.stream_ids[0] >>
        a.stream_ids[1] >> a.stream_ids[2] >> a.stream_ids[3];
    l.expected.resize(static_cast<size_t>(a.rows * a.cols));
    for (float& v : l.expected) {
      f >> word;
      v = std::strtof(word.c_str(), nullptr);
    }
    if (!f) {
      std::fprintf(stderr, "%s: layer '%s' is incomplete\n", path.c_str(), l.name.c_str());
      std::exit(2);
    }
    layers.push_back(std::move(l));
  }
  return layers;
}

// A side file held in memory, cut into one layer's inputs 1-5 as ORT would hand them:
// the ranges come from the pristine file (in a model they are the external-data ranges
// of the initializers), the bytes may be altered since.
struct SideFile {
  std::vector<uint8_t> bytes;
  size_t header_size;
  std::vector<dc_onnx::TocEntry> toc;

  explicit SideFile(std::vector<uint8_t> data) : bytes(std::move(data)) {
    // Versions differ in wiring, not in bytes: read a seed of any version as version 1
    // (separate inputs); test_whole_file_version reads it as version 3.
    bytes.at(8) = 1;
    bytes.at(9) = 0;
    const uint32_t n = uint32_t{bytes.at(12)} | uint32_t{bytes.at(13)} << 8 |
                       uint32_t{bytes.at(14)} << 16 | uint32_t{bytes.at(15)} << 24;
    header_size = dc_onnx::kHeaderFixedSize + dc_onnx::kTocEntrySize * n;
    toc = dc_onnx::parse_header(bytes.data(), header_size);
    for (const auto& e : toc)
      if (e.offset + e.nbytes > bytes.size()) throw std::runtime_error("seed.dcw is truncated");
  }
  Bytes stream(int64_t id) const {
    const dc_onnx::TocEntry& e = toc.at(static_cast<size_t>(id));
    return {bytes.data() + e.offset, static_cast<size_t>(e.nbytes)};
  }
  LayerStreams streams(const LayerAttributes& a) const {
    return {{bytes.data(), header_size}, stream(a.stream_ids[0]), stream(a.stream_ids[1]),
            stream(a.stream_ids[2]), stream(a.stream_ids[3])};
  }
};

std::vector<float> dense(const CsrMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols), 0.0f);
  for (size_t r = 0; r < static_cast<size_t>(m.rows); ++r)
    for (size_t j = m.row_ptr[r]; j < m.row_ptr[r + 1]; ++j)
      out[r * static_cast<size_t>(m.cols) + m.col[j]] = m.codebook[m.code[j]];
  return out;
}

bool refused(const LayerStreams& s, const LayerAttributes& a, std::string* message = nullptr) {
  try {
    (void)dc_onnx::decode_layer(s, a);
  } catch (const DecodeError& e) {
    if (message != nullptr) *message = e.what();
    return true;
  }
  return false;
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

void test_decodes_like_the_reference(const SideFile& file, const Layer& l) {
  const CsrMatrix m = dc_onnx::decode_layer(file.streams(l.attrs), l.attrs);
  CHECK(m.rows == l.attrs.rows && m.cols == l.attrs.cols);
  const std::vector<float> got = dense(m);
  CHECK(got.size() == l.expected.size());
  CHECK(std::memcmp(got.data(), l.expected.data(), got.size() * sizeof(float)) == 0);
  for (const uint8_t c : m.code) CHECK(m.codebook[c] != 0.0f);
  CHECK(m.symbols >= static_cast<uint64_t>(l.attrs.num_entries));
}

// Every single-byte flip in the header and in this layer's streams is refused: the CRCs,
// magic, version and reserved fields cover every byte.
void test_byte_flips_are_refused(const SideFile& file, const Layer& l) {
  std::vector<std::pair<size_t, size_t>> ranges = {{0, file.header_size}};
  for (const int64_t id : l.attrs.stream_ids) {
    const auto& e = file.toc[static_cast<size_t>(id)];
    ranges.emplace_back(static_cast<size_t>(e.offset), static_cast<size_t>(e.offset + e.nbytes));
  }
  SideFile copy = file;
  for (const auto& [begin, end] : ranges)
    for (size_t i = begin; i < end; ++i) {
      copy.bytes[i] ^= 0x10;
      CHECK(refused(copy.streams(l.attrs), l.attrs));
      copy.bytes[i] = file.bytes[i];
    }
}

// Each input cut short by one byte, or emptied, is refused.
void test_truncations_are_refused(const SideFile& file, const Layer& l) {
  const LayerStreams s = file.streams(l.attrs);
  Bytes LayerStreams::*const fields[] = {&LayerStreams::header, &LayerStreams::codebook,
                                         &LayerStreams::codes, &LayerStreams::gaps,
                                         &LayerStreams::code_lengths};
  for (auto field : fields) {
    if ((s.*field).size == 0) continue;
    for (const size_t size : {(s.*field).size - 1, size_t{0}}) {
      LayerStreams cut = s;
      (cut.*field).size = size;
      CHECK(refused(cut, l.attrs));
    }
  }
}

// The checks behind the CRCs: a gaps stream one byte short, with its TOC entry and the
// TOC CRC rewritten to match, is still refused, by the Huffman decoder.
void test_resealed_truncation_is_refused(const SideFile& file, const Layer& l) {
  const auto id = static_cast<size_t>(l.attrs.stream_ids[2]);
  const dc_onnx::TocEntry& gaps = file.toc[id];
  if (gaps.nbytes < 2) return;
  SideFile copy = file;
  const uint64_t nbytes = gaps.nbytes - 1;
  const uint32_t crc = dc_onnx::crc32(copy.bytes.data() + gaps.offset, nbytes);
  uint8_t* entry = copy.bytes.data() + dc_onnx::kHeaderFixedSize + dc_onnx::kTocEntrySize * id;
  for (size_t i = 0; i < 8; ++i) entry[8 + i] = static_cast<uint8_t>(nbytes >> (8 * i));
  for (size_t i = 0; i < 4; ++i) entry[24 + i] = static_cast<uint8_t>(crc >> (8 * i));
  const uint32_t toc_crc = dc_onnx::crc32(copy.bytes.data() + dc_onnx::kHeaderFixedSize,
                                          copy.header_size - dc_onnx::kHeaderFixedSize);
  for (size_t i = 0; i < 4; ++i) copy.bytes[16 + i] = static_cast<uint8_t>(toc_crc >> (8 * i));
  LayerStreams s = copy.streams(l.attrs);
  s.gaps.size -= 1;
  std::string message;
  CHECK(refused(s, l.attrs, &message));
  CHECK(contains(message, "gaps stream"));
}

bool refused_whole(const Bytes& file, const LayerAttributes& a, std::string* message = nullptr) {
  LayerStreams given;
  given.header = file;
  try {
    (void)dc_onnx::decode_layer(dc_onnx::resolve_streams(given, a.stream_ids), a);
  } catch (const DecodeError& e) {
    if (message != nullptr) *message = e.what();
    return true;
  }
  return false;
}

// Format version 3: the same bytes, with version 3, are one buffer from which the layer
// slices its streams; they decode as the separate inputs of version 1-2 do. Every byte
// flip of the header and the layer's streams, a buffer that ends inside a stream the
// layer reads, and a node that also gives a stream of its own are refused.
void test_whole_file_version(const SideFile& file, const Layer& l) {
  std::vector<uint8_t> whole = file.bytes;
  whole[8] = dc_onnx::kWholeFileVersion;
  whole[9] = 0;
  LayerStreams given;
  given.header = {whole.data(), whole.size()};
  const LayerStreams sliced = dc_onnx::resolve_streams(given, l.attrs.stream_ids);
  CHECK(dense(dc_onnx::decode_layer(sliced, l.attrs)) ==
        dense(dc_onnx::decode_layer(file.streams(l.attrs), l.attrs)));

  std::vector<std::pair<size_t, size_t>> ranges = {{0, file.header_size}};
  for (const int64_t id : l.attrs.stream_ids) {
    const auto& e = file.toc[static_cast<size_t>(id)];
    ranges.emplace_back(static_cast<size_t>(e.offset), static_cast<size_t>(e.offset + e.nbytes));
  }
  std::vector<uint8_t> copy = whole;
  for (const auto& [begin, end] : ranges)
    for (size_t i = begin; i < end; ++i) {
      copy[i] ^= 0x10;
      CHECK(refused_whole({copy.data(), copy.size()}, l.attrs));
      copy[i] = whole[i];
    }

  std::string message;
  for (const auto& [begin, end] : ranges) {
    if (begin == 0 || end == begin) continue;  // the header itself; an empty stream
    CHECK(refused_whole({whole.data(), end - 1}, l.attrs, &message) &&
          contains(message, "beyond"));
  }
  LayerStreams both = given;
  both.codes = sliced.codes;
  bool refused_both = false;
  try {
    (void)dc_onnx::resolve_streams(both, l.attrs.stream_ids);
  } catch (const DecodeError& e) {
    refused_both = contains(e.what(), "gives it as an input");
  }
  CHECK(refused_both);
  LayerAttributes a = l.attrs;
  a.stream_ids[1] = static_cast<int64_t>(file.toc.size());
  CHECK(refused_whole({whole.data(), whole.size()}, a, &message) &&
        contains(message, "out of range"));
}

void test_bad_attributes_are_refused(const SideFile& file, const Layer& l) {
  const LayerStreams s = file.streams(l.attrs);
  std::string message;
  LayerAttributes a = l.attrs;
  a.num_entries = -1;
  CHECK(refused(s, a, &message) && contains(message, "num_entries"));
  a = l.attrs;
  a.num_entries += 1;
  CHECK(refused(s, a, &message) && contains(message, "gaps stream"));
  a = l.attrs;
  a.index_bits = 9;
  CHECK(refused(s, a, &message) && contains(message, "index_bits"));
  a = l.attrs;
  a.stream_ids.pop_back();
  CHECK(refused(s, a, &message) && contains(message, "stream_ids"));
  a = l.attrs;
  a.stream_ids[0] = 1000;
  CHECK(refused(s, a, &message) && contains(message, "out of range"));
  a = l.attrs;
  std::swap(a.stream_ids[1], a.stream_ids[2]);
  CHECK(refused(s, a, &message) && contains(message, "kind"));
  // Implicit trailing rows: a few more decode as empty rows, a claim far beyond what the
  // gaps reach is refused before the row offsets are allocated.
  a = l.attrs;
  a.rows += 10;
  CHECK(!refused(s, a));
  a.rows = int64_t{1} << 27;
  CHECK(refused(s, a, &message) && contains(message, "implicit zeros"));
  a = l.attrs;
  a.rows = 1;
  a.cols = 1;
  CHECK(refused(s, a));
  a.rows = 0;
  CHECK(refused(s, a, &message) && contains(message, "dimension"));
}

// A header of a side file with no streams parses; one byte more or less does not.
void test_empty_header() {
  uint8_t header[24] = {'D', 'C', 'O', 'N', 'N', 'X', 'W', '\0', 1, 0};
  const uint32_t crc = dc_onnx::crc32(header + 24, 0);
  for (size_t i = 0; i < 4; ++i) header[16 + i] = static_cast<uint8_t>(crc >> (8 * i));
  CHECK(dc_onnx::parse_header(header, sizeof header).empty());
  bool short_refused = false;
  try {
    dc_onnx::parse_header(header, sizeof header - 1);
  } catch (const DecodeError&) {
    short_refused = true;
  }
  CHECK(short_refused);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <directory holding seed.dcw and seed.txt>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const SideFile file(read_file(dir + "/seed.dcw"));
  const std::vector<Layer> layers = read_layers(dir + "/seed.txt");
  CHECK(layers.size() >= 2);
  test_empty_header();
  for (const Layer& l : layers) {
    try {
      test_decodes_like_the_reference(file, l);
      test_byte_flips_are_refused(file, l);
      test_truncations_are_refused(file, l);
      test_resealed_truncation_is_refused(file, l);
      test_bad_attributes_are_refused(file, l);
      test_whole_file_version(file, l);
    } catch (const std::exception& e) {
      ++g_failures;
      std::fprintf(stderr, "layer '%s': unexpected exception: %s\n", l.name.c_str(), e.what());
    }
  }
  std::printf("test_decoder: %d checks over %zu layers, %d failed\n", g_checks, layers.size(),
              g_failures);
  return g_failures == 0 ? 0 : 1;
}
