// libFuzzer target over the standalone decoder (decoder.h): a side file and one layer's
// attributes in (fuzz_input.h), a decoded weight or a DecodeError out. Any other
// exception, a crash or a sanitizer report is a finding; so is a decoded weight that
// breaks the CSR invariants the kernels rely on.
#include <cstdint>
#include <cstdlib>

#include "decode_error.h"
#include "decoder.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dc_onnx_fuzz::FuzzLayer layer;
  if (!dc_onnx_fuzz::parse_fuzz_input(data, size, &layer)) return 0;
  dc_onnx::LayerAttributes a;
  auto get = [&](const char* name) -> const std::vector<int64_t>* {
    const auto it = layer.ints.find(name);
    return it == layer.ints.end() ? nullptr : &it->second;
  };
  // Gemm/MatMul store weight_shape itself; Conv [M, C/g, k...] stores [M, C/g * prod(k)].
  if (const auto* ws = get("weight_shape"); ws != nullptr && ws->size() >= 2) {
    a.rows = (*ws)[0];
    a.cols = (*ws)[1];
    for (size_t i = 2; i < ws->size() && i < 4; ++i)
      if (__builtin_mul_overflow(a.cols, (*ws)[i], &a.cols)) return 0;
  }
  if (const auto* v = get("num_entries"); v != nullptr && !v->empty()) a.num_entries = (*v)[0];
  if (const auto* v = get("index_bits"); v != nullptr && !v->empty()) a.index_bits = (*v)[0];
  if (const auto* v = get("stream_ids")) a.stream_ids = *v;
  const dc_onnx::LayerStreams s{layer.header,     layer.streams[0], layer.streams[1],
                                layer.streams[2], layer.streams[3], layer.streams[4]};
  try {
    const dc_onnx::CsrMatrix m = dc_onnx::decode_layer(dc_onnx::resolve_streams(s, a.stream_ids), a);
    // What the kernels index with: rows + 1 monotone offsets ending at the non-zeros,
    // columns inside the row, codes that select a non-zero codebook value.
    if (m.row_ptr.size() != static_cast<size_t>(m.rows) + 1 || m.row_ptr.front() != 0 ||
        m.row_ptr.back() != m.col.size() || m.col.size() != m.code.size() ||
        (!m.row_scale.empty() && m.row_scale.size() != static_cast<size_t>(m.rows)))
      std::abort();
    for (size_t r = 0; r + 1 < m.row_ptr.size(); ++r)
      if (m.row_ptr[r] > m.row_ptr[r + 1]) std::abort();
    for (size_t j = 0; j < m.col.size(); ++j)
      if (m.col[j] >= static_cast<uint64_t>(m.cols) || m.codebook[m.code[j]] == 0.0f)
        std::abort();
  } catch (const dc_onnx::DecodeError&) {
  }
  return 0;
}
