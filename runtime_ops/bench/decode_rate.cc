// Huffman decode rate, the library's decoder (B) against a baseline copy (A), in one
// process on the same streams: for each file of streams (models/huffman_streams.py),
// alternating A and B runs over all its layers, each timed by the thread's CPU time
// (time other processes hold the core is left out); prints the medians in MB/s of
// symbols (one byte each), as `DC_ONNX_DECODE_STATS` counts them.
// Usage: decode_rate [--runs N] FILE.streams...   (make decode-rate)
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "decode_bench.h"
#include "decode_error.h"
#include "sparse_weight.h"

namespace {

using decode_bench::Layer;

struct Streams {
  std::vector<uint8_t> bytes;  // the whole file; layers point into it
  std::vector<Layer> layers;
  uint64_t symbols = 0;
};

template <typename T>
T take(const std::vector<uint8_t>& b, size_t& at) {
  if (b.size() - at < sizeof(T)) {
    std::fprintf(stderr, "decode_rate: truncated streams file\n");
    std::exit(2);
  }
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  at += sizeof v;
  return v;
}

const uint8_t* span(const std::vector<uint8_t>& b, size_t& at, uint64_t n) {
  if (b.size() - at < n) {
    std::fprintf(stderr, "decode_rate: truncated streams file\n");
    std::exit(2);
  }
  const uint8_t* p = b.data() + at;
  at += static_cast<size_t>(n);
  return p;
}

Streams read_streams(const char* path) {
  Streams s;
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "decode_rate: cannot read %s\n", path);
    std::exit(2);
  }
  uint8_t chunk[1 << 16];
  for (size_t got; (got = std::fread(chunk, 1, sizeof chunk, f)) > 0;)
    s.bytes.insert(s.bytes.end(), chunk, chunk + got);
  std::fclose(f);
  size_t at = 0;
  if (take<uint32_t>(s.bytes, at) != 0x53484344u) {  // "DCHS"
    std::fprintf(stderr, "decode_rate: %s is not a streams file\n", path);
    std::exit(2);
  }
  const auto n = take<uint32_t>(s.bytes, at);
  for (uint32_t i = 0; i < n; ++i) {
    Layer l{};
    l.k = take<uint32_t>(s.bytes, at);
    l.index_bits = take<uint32_t>(s.bytes, at);
    if (l.index_bits > 8) {
      std::fprintf(stderr, "decode_rate: %s: index_bits above 8\n", path);
      std::exit(2);
    }
    l.num_entries = take<uint64_t>(s.bytes, at);
    l.num_codes = take<uint64_t>(s.bytes, at);
    l.gaps_bytes = take<uint64_t>(s.bytes, at);
    l.codes_bytes = take<uint64_t>(s.bytes, at);
    l.rows = static_cast<int64_t>(take<uint64_t>(s.bytes, at));
    l.cols = static_cast<int64_t>(take<uint64_t>(s.bytes, at));
    l.lengths = span(s.bytes, at, uint64_t{l.k} + (uint64_t{1} << l.index_bits));
    l.gaps = span(s.bytes, at, l.gaps_bytes);
    l.codes = span(s.bytes, at, l.codes_bytes);
    s.symbols += l.num_entries + l.num_codes;
    s.layers.push_back(l);
  }
  return s;
}

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

using Decode = void (*)(const Layer&, uint8_t*, uint8_t*);

// Decodes every layer once; returns the CPU seconds taken.
double run(Decode decode, const Streams& s, std::vector<uint8_t>& gaps,
           std::vector<uint8_t>& codes) {
  const double start = cpu_seconds();
  for (const Layer& l : s.layers) decode(l, gaps.data(), codes.data());
  return cpu_seconds() - start;
}

// The library's own figure: decode_weight's decode_ns (what `dc-onnx bench` and
// DC_ONNX_DECODE_STATS report), summed over the layers; in seconds.
double library_seconds(const Streams& s) {
  static float codebook[256];
  for (int i = 0; i < 256; ++i) codebook[i] = static_cast<float>(i);
  uint64_t ns = 0;
  for (const Layer& l : s.layers) {
    const dc_onnx::EncodedWeight w{codebook,    l.k,           l.codes,
                                   l.codes_bytes, l.gaps,       l.gaps_bytes,
                                   l.lengths,   l.k + (size_t{1} << l.index_bits),
                                   l.num_entries, l.num_codes,  l.index_bits};
    ns += dc_onnx::decode_weight(w, l.rows, l.cols).decode_ns;
  }
  return static_cast<double>(ns) * 1e-9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

// Times one file of streams and prints its line; false when the decoders disagree.
// Throws DecodeError (either namespace's) on a stream that does not decode.
bool bench_file(const char* path, int runs) {
  const Streams s = read_streams(path);
  size_t most_gaps = 0, most_codes = 0;
  uint64_t gap_bits = 0, gap_count = 0, code_bits = 0, code_count = 0;
  for (const Layer& l : s.layers) {
    most_gaps = std::max(most_gaps, static_cast<size_t>(l.num_entries));
    most_codes = std::max(most_codes, static_cast<size_t>(l.num_codes));
    gap_bits += l.gaps_bytes * 8;
    gap_count += l.num_entries;
    code_bits += l.codes_bytes * 8;
    code_count += l.num_codes;
  }
  std::vector<uint8_t> gaps_a(most_gaps), codes_a(most_codes);
  std::vector<uint8_t> gaps_b(most_gaps), codes_b(most_codes);
  // The two decoders must agree, layer by layer, before either is timed.
  for (const Layer& l : s.layers) {
    dc_onnx_baseline::bench_decode(l, gaps_a.data(), codes_a.data());
    dc_onnx::bench_decode(l, gaps_b.data(), codes_b.data());
    if (!std::equal(gaps_a.begin(), gaps_a.begin() + static_cast<long>(l.num_entries),
                    gaps_b.begin()) ||
        !std::equal(codes_a.begin(), codes_a.begin() + static_cast<long>(l.num_codes),
                    codes_b.begin())) {
      std::fprintf(stderr, "decode_rate: %s: the decoders disagree\n", path);
      return false;
    }
  }
  std::vector<double> ta, tb, tl;
  for (int r = 0; r < runs; ++r) {
    ta.push_back(run(dc_onnx_baseline::bench_decode, s, gaps_a, codes_a));
    tb.push_back(run(dc_onnx::bench_decode, s, gaps_b, codes_b));
    tl.push_back(library_seconds(s));
  }
  const double mb = static_cast<double>(s.symbols) * 1e-6;
  const double a = mb / median(ta), b = mb / median(tb);
  std::string name = path;
  name = name.substr(name.find_last_of('/') + 1);
  std::printf("%-20s %9llu %6.2f %6.2f %9.1f %9.1f %7.3f %9.1f\n", name.c_str(),
              static_cast<unsigned long long>(s.symbols),
              gap_count ? static_cast<double>(gap_bits) / static_cast<double>(gap_count) : 0.0,
              code_count ? static_cast<double>(code_bits) / static_cast<double>(code_count) : 0.0,
              a, b, b / a, mb / median(tl));
  std::fflush(stdout);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 31;
  std::vector<const char*> paths;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--runs") == 0 && a + 1 < argc) {
      runs = std::atoi(argv[++a]);
    } else {
      paths.push_back(argv[a]);
    }
  }
  if (paths.empty() || runs < 1) {
    std::fprintf(stderr, "usage: decode_rate [--runs N] FILE.streams...\n");
    return 2;
  }
  // Columns: symbols of both streams; mean bits per gap and per code; the medians of A
  // and B; B's rate as decode_weight times it (the figure `dc-onnx bench` prints).
  std::printf("%-20s %9s %6s %6s %9s %9s %7s %9s\n", "streams", "symbols", "gap b", "code b",
              "A MB/s", "B MB/s", "B/A", "B in lib");
  for (const char* path : paths) {
    try {
      if (!bench_file(path, runs)) return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "decode_rate: %s: %s\n", path, e.what());
      return 1;
    }
  }
  return 0;
}
