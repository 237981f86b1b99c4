// Batch-1 (and batch-`width`) FC time of the few-rows form (cluster_rows.h), the library's
// (B) against a baseline copy (A), in one process on one real weight: the single FC
// layer of a compiled model's side file, decoded as the library does. A and B alternate,
// each run timed by the thread's CPU time, warm (after a run of its own) and cold (after
// a 64 MB sweep, as after ORT's dense layer); medians and 10th percentiles (on a shared
// machine the low end moves less). Also prints each form's session-creation cost
// (packing time, heap bytes) and an ideal loop over the same non-zeros: one scalar
// load-add per non-zero in CSR order, 16-bit indices read two at a time, 8 chains, no
// codes, no groups: what any kernel that reads x once per non-zero costs at least.
// Usage: fc_rows [--runs N] FILE.dcw ROWS COLS     (make fc-rows)
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <vector>

#include "decoder.h"
#include "fc_rows_bench.h"
#include "side_file.h"

namespace {

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fc_rows: %s\n", what);
  std::exit(2);
}

std::vector<uint8_t> read_file(const char* path) {
  std::vector<uint8_t> bytes;
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) die("cannot read the side file");
  uint8_t chunk[1 << 16];
  for (size_t got; (got = std::fread(chunk, 1, sizeof chunk, f)) > 0;)
    bytes.insert(bytes.end(), chunk, chunk + got);
  std::fclose(f);
  return bytes;
}

// The one layer of a side file that holds a single FC weight without row scales, each
// stream found by its kind in the TOC (the node's attributes are not needed for that).
dc_onnx::CsrMatrix decode_only_layer(const std::vector<uint8_t>& file, int64_t rows,
                                     int64_t cols) {
  // Versions 1-2 validate the header and TOC alone, version 3 the whole file.
  size_t header = file.size();
  if (dc_onnx::peek_format_version(file.data(), file.size()) < dc_onnx::kWholeFileVersion) {
    uint32_t n = 0;
    if (file.size() >= 16) std::memcpy(&n, file.data() + 12, 4);
    header = std::min(file.size(), dc_onnx::kHeaderFixedSize + dc_onnx::kTocEntrySize * n);
  }
  const std::vector<dc_onnx::TocEntry> toc = dc_onnx::parse_header(file.data(), header);
  dc_onnx::LayerAttributes attrs;
  attrs.rows = rows;
  attrs.cols = cols;
  attrs.stream_ids.assign(4, -1);
  for (size_t i = 0; i < toc.size(); ++i) {
    const uint16_t kind = toc[i].kind;
    if (kind < 1 || kind > 4 || attrs.stream_ids[kind - 1] != -1)
      die("not the side file of one FC layer without row scales");
    attrs.stream_ids[kind - 1] = static_cast<int64_t>(i);
  }
  const auto entry = [&](size_t i) { return toc[static_cast<size_t>(attrs.stream_ids[i])]; };
  attrs.num_entries = static_cast<int64_t>(entry(2).count);
  while ((uint64_t{1} << attrs.index_bits) < entry(3).count - entry(0).count) ++attrs.index_bits;
  dc_onnx::LayerStreams s;
  s.header = {file.data(), header};
  if (header == file.size())
    return dc_onnx::decode_layer(dc_onnx::resolve_streams(s, attrs.stream_ids), attrs);
  dc_onnx::Bytes* const slots[] = {&s.codebook, &s.codes, &s.gaps, &s.code_lengths};
  for (size_t i = 0; i < 4; ++i) {
    if (entry(i).offset > file.size() || entry(i).nbytes > file.size() - entry(i).offset)
      die("a stream lies outside the file");
    *slots[i] = {file.data() + entry(i).offset, static_cast<size_t>(entry(i).nbytes)};
  }
  return dc_onnx::decode_layer(s, attrs);
}

struct Form {
  using Pack = fc_bench::Packed (*)(const fc_bench::Weight&);
  using Run = void (*)(const fc_bench::Packed&, const float*, float*);
  Form(const char* n, Pack p, Run d, Run c) : name(n), pack(p), dots(d), columns(c) {}
  const char* name;
  Pack pack;
  Run dots;
  Run columns;
  fc_bench::Packed packed{};
  double pack_s = 0;
  std::vector<double> warm, cold, batch;
};

// Reads a float of every cache line of a 64 MB buffer: what ORT's dense 4096x4096 layer
// leaves in the caches.
float sweep(const std::vector<float>& big) {
  float acc = 0;
  for (size_t i = 0; i < big.size(); i += 16) acc += big[i];
  return acc;
}

// The ideal loop (file comment): y[n] = sum of x over row n's columns, 8 chains.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))  // keep it the scalar loop it is
#endif
void ideal(const std::vector<size_t>& ptr, const std::vector<uint16_t>& col, const float* x,
           float* y) {
  for (size_t n = 0; n + 1 < ptr.size(); ++n) {
    float s[8] = {};
    size_t j = ptr[n];
    for (; j + 8 <= ptr[n + 1]; j += 8)
      for (size_t l = 0; l < 8; l += 2) {
        uint32_t both;
        std::memcpy(&both, col.data() + j + l, 4);
        s[l] += x[both & 0xFFFF];
        s[l + 1] += x[both >> 16];
      }
    for (; j < ptr[n + 1]; ++j) s[0] += x[col[j]];
    y[n] = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  }
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 41;
  std::vector<const char*> args;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--runs") == 0 && a + 1 < argc)
      runs = std::atoi(argv[++a]);
    else
      args.push_back(argv[a]);
  }
  if (args.size() != 3 || runs < 1) {
    std::fprintf(stderr, "usage: fc_rows [--runs N] FILE.dcw ROWS COLS\n");
    return 2;
  }
  try {
    const dc_onnx::CsrMatrix m =
        decode_only_layer(read_file(args[0]), std::atoll(args[1]), std::atoll(args[2]));
    if (m.cols >= 65536) die("the ideal loop takes 16-bit column indices: COLS < 65536");
    const fc_bench::Weight w{m.rows, m.cols, m.row_ptr.data(), m.col.data(), m.code.data(),
                             m.codebook.data()};
    Form forms[] = {{"A", dc_onnx_baseline::fc_pack, dc_onnx_baseline::fc_dots,
                     dc_onnx_baseline::fc_columns},
                    {"B", dc_onnx::fc_pack, dc_onnx::fc_dots, dc_onnx::fc_columns}};
    for (Form& f : forms) {
      const double t0 = cpu_seconds();
      f.packed = f.pack(w);
      f.pack_s = cpu_seconds() - t0;
    }
    const auto cols = static_cast<size_t>(m.cols);
    const auto rows = static_cast<size_t>(m.rows);
    const auto width = static_cast<size_t>(dc_onnx::fc_width());
    if (width != static_cast<size_t>(dc_onnx_baseline::fc_width())) die("widths differ");
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    std::vector<float> x(cols + 1, 0.0f);  // x[cols] == 0: read by empty lanes
    for (size_t j = 0; j < cols; ++j) x[j] = normal(rng);
    std::vector<float> xk((cols + 1) * width, 0.0f);
    for (size_t j = 0; j < cols * width; ++j) xk[j] = normal(rng);
    std::vector<float> ya(rows * width), yb(rows * width);
    forms[0].dots(forms[0].packed, x.data(), ya.data());
    forms[1].dots(forms[1].packed, x.data(), yb.data());
    const bool same1 = std::memcmp(ya.data(), yb.data(), rows * 4) == 0;
    forms[0].columns(forms[0].packed, xk.data(), ya.data());
    forms[1].columns(forms[1].packed, xk.data(), yb.data());
    const bool same_w = std::memcmp(ya.data(), yb.data(), rows * width * 4) == 0;
    const std::vector<uint16_t> col16(m.col.begin(), m.col.end());
    std::vector<double> ideal_warm;
    std::vector<float> big(size_t{16} << 20, 1.0f);
    float sink = 0;
    for (int r = 0; r < runs; ++r) {
      for (int i = 0; i < 2; ++i) {
        Form& f = forms[r % 2 ? i : 1 - i];
        f.dots(f.packed, x.data(), ya.data());
        double t0 = cpu_seconds();
        f.dots(f.packed, x.data(), ya.data());
        f.warm.push_back(cpu_seconds() - t0);
        sink += sweep(big);
        t0 = cpu_seconds();
        f.dots(f.packed, x.data(), ya.data());
        f.cold.push_back(cpu_seconds() - t0);
        t0 = cpu_seconds();
        f.columns(f.packed, xk.data(), ya.data());
        f.batch.push_back(cpu_seconds() - t0);
      }
      ideal(m.row_ptr, col16, x.data(), yb.data());
      const double t0 = cpu_seconds();
      ideal(m.row_ptr, col16, x.data(), yb.data());
      ideal_warm.push_back(cpu_seconds() - t0);
      sink += yb[0];
    }
    const double nz = static_cast<double>(m.col.size());
    std::printf("%lld x %lld, %zu non-zeros, %d runs; same bits: batch 1 %s, batch %zu %s"
                " (sink %g)\n",
                static_cast<long long>(m.rows), static_cast<long long>(m.cols), m.col.size(),
                runs, same1 ? "yes" : "NO", width, same_w ? "yes" : "NO",
                static_cast<double>(sink));
    std::printf("form  warm ms (p10)      cold ms (p10)      ns/nz (p10)  batch-%zu ms  pack s"
                "    MiB\n",
                width);
    for (const Form& f : forms)
      std::printf("%-4s %7.3f (%6.3f)  %7.3f (%6.3f)  %5.3f (%5.3f) %11.3f %7.3f %6.1f\n",
                  f.name, quantile(f.warm, 0.5) * 1e3, quantile(f.warm, 0.1) * 1e3,
                  quantile(f.cold, 0.5) * 1e3, quantile(f.cold, 0.1) * 1e3,
                  quantile(f.warm, 0.5) * 1e9 / nz, quantile(f.warm, 0.1) * 1e9 / nz,
                  quantile(f.batch, 0.5) * 1e3, f.pack_s,
                  static_cast<double>(f.packed.bytes) / 1048576.0);
    std::printf("ideal %6.3f (%6.3f)  (one load-add per non-zero, warm)\n",
                quantile(ideal_warm, 0.5) * 1e3, quantile(ideal_warm, 0.1) * 1e3);
    const auto ratio = [&](const std::vector<double> Form::*t, double q) {
      return quantile(forms[0].*t, q) / quantile(forms[1].*t, q);
    };
    std::printf("B over A (median, p10): warm %.3fx %.3fx, cold %.3fx %.3fx, batch-%zu %.3fx\n",
                ratio(&Form::warm, 0.5), ratio(&Form::warm, 0.1), ratio(&Form::cold, 0.5),
                ratio(&Form::cold, 0.1), width, ratio(&Form::batch, 0.5));
    return same1 && same_w ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fc_rows: %s\n", e.what());
    return 2;
  }
}
