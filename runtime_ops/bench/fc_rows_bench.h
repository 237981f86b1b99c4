// The batch-1 FC benchmark's view of a decoded weight, and the calls it times.
// fc_rows_one.cc is compiled twice: against the library's few-rows form (namespace
// dc_onnx) and against a baseline copy of cluster_rows.{h,cc} renamed to namespace
// dc_onnx_baseline, so both run in one process on the same weight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace fc_bench {

// A decoded CSR weight (sparse_weight.h's CsrMatrix, in types both builds share).
struct Weight {
  int64_t rows;
  int64_t cols;
  const size_t* row_ptr;   // rows + 1
  const uint32_t* col;
  const uint8_t* code;
  const float* codebook;   // 256 values
};

// One build's resident form, and the heap bytes packing it left allocated.
struct Packed {
  std::shared_ptr<const void> form;
  size_t bytes;
};

}  // namespace fc_bench

#define FC_BENCH_DECLARE                                                             \
  fc_bench::Packed fc_pack(const fc_bench::Weight& w);                              \
  /* y[0 .. rows) for one activation vector x[0 .. cols], x[cols] == 0 */           \
  void fc_dots(const fc_bench::Packed& p, const float* x, float* y);               \
  /* y[n * width + c] for `width` K-major vectors xk[j * width + c], row cols 0 */   \
  void fc_columns(const fc_bench::Packed& p, const float* xk, float* y);           \
  /* the `width` fc_columns takes on this CPU's path */                             \
  int64_t fc_width();

namespace dc_onnx {
FC_BENCH_DECLARE
}  // namespace dc_onnx

namespace dc_onnx_baseline {
FC_BENCH_DECLARE
}  // namespace dc_onnx_baseline
