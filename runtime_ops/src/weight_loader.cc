#include "weight_loader.h"

#include <string>
#include <vector>

#include "decode_stats.h"
#include "decoder.h"
#include "kernel_info.h"
#include "side_file.h"

namespace dc_onnx {
namespace {

const char* const kInputNames[] = {"X",    "header",       "codebook", "codes",
                                   "gaps", "code_lengths", "bias",     "row_scales"};

// The raw bytes of constant input `index`, which must be a 1-D tensor of `type`.
Bytes constant_input(const OrtKernelInfo* info, size_t index, ONNXTensorElementDataType type,
                     size_t elem_size) {
  const std::string name = std::string("input ") + std::to_string(index) + " (" +
                           kInputNames[index] + ")";
  const ConstantTensor t = constant_tensor(info, index, name);
  if (t.type != type) fail(name + " has the wrong element type");
  return Bytes{t.data, t.count * elem_size};
}

}  // namespace

CsrMatrix load_compressed_weight(const OrtKernelInfo* info, int64_t rows, int64_t cols) {
  size_t num_inputs = 0;
  if (!ok(Ort::GetApi().KernelInfo_GetInputCount(info, &num_inputs)) || num_inputs < 2)
    fail("the node needs at least 2 inputs (X, header)");
  LayerAttributes attrs;
  attrs.rows = rows;
  attrs.cols = cols;
  attrs.num_entries = required_int(info, "num_entries");
  attrs.index_bits = required_int(info, "index_bits");
  attrs.stream_ids = required_ints(info, "stream_ids");

  LayerStreams streams;
  streams.header = constant_input(info, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
  if (peek_format_version(streams.header.data, streams.header.size) >= kWholeFileVersion) {
    // The streams are slices of the side file (resolve_streams): the inputs stay empty.
    for (const size_t i : {size_t{2}, size_t{3}, size_t{4}, size_t{5}, size_t{7}})
      if (has_input(info, i))
        fail(std::string("input ") + std::to_string(i) + " (" + kInputNames[i] +
             ") must be empty: format version 3 reads the streams from the side file");
  } else {
    if (num_inputs < 6)
      fail("the node needs at least 6 inputs (X, header, codebook, codes, gaps, code_lengths)");
    streams.codebook = constant_input(info, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4);
    streams.codes = constant_input(info, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
    streams.gaps = constant_input(info, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
    streams.code_lengths = constant_input(info, 5, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
    if (attrs.stream_ids.size() == 5) {
      if (num_inputs < 8) fail("stream_ids names row scales but the node has no input 7");
      streams.row_scales = constant_input(info, 7, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4);
    }
  }

  CsrMatrix csr = decode_layer(resolve_streams(streams, attrs.stream_ids), attrs);
  report_decode_stats(layer_name(info), csr);
  return csr;
}

std::pair<int64_t, int64_t> matrix_shape(const OrtKernelInfo* info) {
  const std::vector<int64_t> shape = required_ints(info, "weight_shape");
  check_weight_shape(shape, {2});
  return {shape[0], shape[1]};
}

}  // namespace dc_onnx
