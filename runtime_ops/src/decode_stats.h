// Decode statistics, opt-in: when the environment variable DC_ONNX_DECODE_STATS names a
// file, every layer appends one JSON line to it after decoding (format in
// runtime_ops/README.md, "Decode statistics"); `dc-onnx bench` reads that file.
#pragma once

#include <string>

#include "sparse_weight.h"

namespace dc_onnx {

constexpr const char* kDecodeStatsEnv = "DC_ONNX_DECODE_STATS";

// Appends {"layer", "rows", "cols", "nonzeros", "symbols", "decode_ns"} for `csr` to the
// file named by DC_ONNX_DECODE_STATS; does nothing when the variable is unset or empty,
// or when the file cannot be opened (statistics never make a session fail).
void report_decode_stats(const std::string& layer, const CsrMatrix& csr);

}  // namespace dc_onnx
