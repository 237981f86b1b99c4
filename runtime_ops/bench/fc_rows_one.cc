// The calls fc_rows times (fc_rows_bench.h); built once per few-rows form.
#include <malloc.h>

#include <algorithm>

#include "cluster_rows.h"
#include "fc_rows_bench.h"

namespace dc_onnx {
namespace {

size_t heap_bytes() {
  const auto i = mallinfo2();
  return i.uordblks + i.hblkhd;
}

}  // namespace

fc_bench::Packed fc_pack(const fc_bench::Weight& w) {
  CsrMatrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  m.row_ptr.assign(w.row_ptr, w.row_ptr + w.rows + 1);
  m.col.assign(w.col, w.col + m.row_ptr.back());
  m.code.assign(w.code, w.code + m.row_ptr.back());
  std::copy(w.codebook, w.codebook + 256, m.codebook.begin());
  const size_t before = heap_bytes();
  auto form = std::make_shared<ClusterRows>(pack_clusters(m));
  return {form, heap_bytes() - before};
}

void fc_dots(const fc_bench::Packed& p, const float* x, float* y) {
  const auto& w = *static_cast<const ClusterRows*>(p.form.get());
  cluster_dots(w, x, 0, w.rows, y);
}

void fc_columns(const fc_bench::Packed& p, const float* xk, float* y) {
  const auto& w = *static_cast<const ClusterRows*>(p.form.get());
  cluster_columns(w, xk, 0, w.rows, y);
}

int64_t fc_width() { return cluster_width(); }

}  // namespace dc_onnx
