// What every compressed op does at kernel creation: fetch the constant inputs 1-5 and
// the stream attributes, hand them to the standalone decoder (decoder.h) and report
// the decode statistics (decode_stats.h).
#pragma once

#include <cstdint>

#include "ort_api.h"
#include "sparse_weight.h"

namespace dc_onnx {

// Reads inputs 1-5 and the attributes num_entries, index_bits and stream_ids, then
// validates and decodes the stored [rows, cols] matrix. Throws dc_onnx::Error or
// dc_onnx::DecodeError (without the layer prefix: with_layer adds it).
CsrMatrix load_compressed_weight(const OrtKernelInfo* info, int64_t rows, int64_t cols);

// load_compressed_weight for Gemm and MatMul, whose weight_shape is the stored
// [rows, cols] itself.
CsrMatrix load_matrix_weight(const OrtKernelInfo* info);

}  // namespace dc_onnx
