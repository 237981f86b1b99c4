// The error type of the standalone decoder (side_file, huffman, sparse_weight, decoder):
// a defect in the compressed weight. It needs no ORT header, so the decoder builds and is
// tested (and fuzzed) alone; the ORT-facing code (kernel_info.h, with_layer) turns it into
// an OrtStatus (ORT_INVALID_GRAPH) whose message names the layer.
#pragma once

#include <stdexcept>
#include <string>

namespace dc_onnx {

class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail_decode(const std::string& msg) { throw DecodeError(msg); }

}  // namespace dc_onnx
