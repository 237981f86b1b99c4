// What every compressed op does at kernel creation: fetch the constant inputs 1-5 and
// the stream attributes, hand them to the standalone decoder (decoder.h) and report
// the decode statistics (decode_stats.h).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "ort_api.h"
#include "sparse_weight.h"
#include "weight_cache.h"

namespace dc_onnx {

// Reads inputs 1-5 and the attributes num_entries, index_bits and stream_ids, then
// validates and decodes the stored [rows, cols] matrix. Throws dc_onnx::Error or
// dc_onnx::DecodeError (without the layer prefix: with_layer adds it).
CsrMatrix load_compressed_weight(const OrtKernelInfo* info, int64_t rows, int64_t cols);

// The stored [rows, cols] of a Gemm or MatMul weight: its weight_shape, checked.
std::pair<int64_t, int64_t> matrix_shape(const OrtKernelInfo* info);

// The resident form `pack` makes of the node's decoded [rows, cols] weight, shared with
// every other node that reads the same stored weight (weight_cache.h), which is then
// decoded once. `params` names what else the form depends on.
template <typename Pack>
auto load_shared_weight(const OrtKernelInfo* info, int64_t rows, int64_t cols,
                        const std::string& params, Pack&& pack) {
  using Form = std::decay_t<decltype(pack(std::declval<const CsrMatrix&>()))>;
  return shared_form<Form>(weight_identity(info, rows, cols), params,
                           [&] { return pack(load_compressed_weight(info, rows, cols)); });
}

}  // namespace dc_onnx
