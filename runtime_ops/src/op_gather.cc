// CompressedGather: Y = table[indices] along axis 0, the table decoded once at kernel
// creation into a coded resident form (op_gather.h) and expanded row by row at Run.
#include "op_gather.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernel_info.h"
#include "parallel.h"
#include "simd.h"
#include "weight_loader.h"

namespace dc_onnx {
namespace {

// Table ranks accepted: the vocabulary axis plus up to 7 row axes.
constexpr size_t kMaxTableRank = 8;

// Below this many output floats one thread expands every row: the pool round trip
// would cost more than the copy.
constexpr int64_t kParallelFloats = int64_t{1} << 16;

// The indices as int64 (ONNX Gather takes int32 or int64), each checked against
// [-rows, rows - 1] and made non-negative, as ORT's Gather does.
std::vector<int64_t> checked_indices(const Ort::ConstValue& value, int64_t rows) {
  const auto ti = value.GetTensorTypeAndShapeInfo();
  const size_t count = ti.GetElementCount();
  std::vector<int64_t> out(count);
  const ONNXTensorElementDataType type = ti.GetElementType();
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64) {
    if (count > 0) std::memcpy(out.data(), value.GetTensorData<int64_t>(), count * 8);
  } else if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32) {
    const int32_t* p = count > 0 ? value.GetTensorData<int32_t>() : nullptr;
    for (size_t i = 0; i < count; ++i) out[i] = p[i];
  } else {
    fail_input("indices must be int32 or int64");
  }
  for (size_t i = 0; i < count; ++i) {
    const int64_t v = out[i];
    if (v < -rows || v >= rows)
      fail_input("index " + std::to_string(v) + " at position " + std::to_string(i) +
                 " is out of range [" + std::to_string(-rows) + ", " + std::to_string(rows - 1) +
                 "]");
    if (v < 0) out[i] = v + rows;
  }
  return out;
}

// One row from dense codes: a codebook look-up per weight (the wider clones assemble
// the looked-up values into vector stores).
DC_ONNX_HOT void expand_codes(const uint8_t* __restrict codes, size_t width,
                              const float* __restrict codebook, float* __restrict out) {
  for (size_t j = 0; j < width; ++j) out[j] = codebook[codes[j]];
}

// One row from CSR: zeros, then each non-zero scattered to its column.
template <typename Col>
void expand_csr(const uint8_t* codes, const Col* cols, size_t count, size_t width,
                const float* codebook, float* out) {
  std::fill(out, out + width, 0.0f);
  for (size_t j = 0; j < count; ++j) out[cols[j]] = codebook[codes[j]];
}

CodedTable pack_table(const CsrMatrix& w) {
  CodedTable t;
  t.width = w.cols;
  t.codebook = w.codebook;
  t.codebook[0] = 0.0f;  // also when stored as -0.0: unstored weights are +0
  t.row_scale = w.row_scale;
  const auto rows = static_cast<size_t>(w.rows);
  const auto width = static_cast<size_t>(w.cols);
  const size_t col_bytes = width <= 65536 ? 2 : 4;
  // rows * width <= 2^62 (both dims < 2^31): no overflow in either size.
  const uint64_t dense_bytes = static_cast<uint64_t>(rows) * width;
  const uint64_t csr_bytes = w.code.size() * (1 + col_bytes) + (rows + 1) * sizeof(size_t);
  t.dense = dense_bytes <= csr_bytes;
  if (t.dense) {
    t.codes.assign(static_cast<size_t>(dense_bytes), 0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = w.row_ptr[r]; j < w.row_ptr[r + 1]; ++j)
        t.codes[r * width + w.col[j]] = w.code[j];
    return t;
  }
  t.row_ptr = w.row_ptr;
  t.codes = w.code;
  if (col_bytes == 2) {
    t.col16.reserve(w.col.size());
    for (const uint32_t c : w.col) t.col16.push_back(static_cast<uint16_t>(c));  // c < 65536
  } else {
    t.col32 = w.col;
  }
  return t;
}

}  // namespace

GatherKernel::GatherKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    const std::vector<int64_t> shape = required_ints(info, "weight_shape");
    if (shape.empty() || shape.size() > kMaxTableRank)
      fail("weight_shape " + shape_str(shape) + " must have 1.." +
           std::to_string(kMaxTableRank) + " dims");
    width_ = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] < 1 || shape[i] > INT32_MAX)
        fail("weight_shape " + shape_str(shape) + " has an invalid dim");
      if (i == 0) continue;
      // Both factors are <= 2^31-1, so the product fits int64 before the check.
      width_ *= shape[i];
      if (width_ > INT32_MAX) fail("weight_shape " + shape_str(shape) + " has too wide rows");
    }
    rows_ = shape[0];
    row_shape_.assign(shape.begin() + 1, shape.end());

    table_ = load_shared_weight(info, rows_, width_, "", pack_table);
  });
}

void CodedTable::expand_row(size_t r, float* out) const {
  const auto w = static_cast<size_t>(width);
  expand_codes_of(r, out);
  if (row_scale.empty()) return;
  const float s = row_scale[r];  // the same product, rounded once, as every decoder
  for (size_t j = 0; j < w; ++j) out[j] = s * out[j];
}

void CodedTable::expand_codes_of(size_t r, float* out) const {
  const auto w = static_cast<size_t>(width);
  if (dense) {
    expand_codes(codes.data() + r * w, w, codebook.data(), out);
    return;
  }
  const size_t begin = row_ptr[r];
  const size_t count = row_ptr[r + 1] - begin;
  const uint8_t* c = codes.data() + begin;
  if (col32.empty())
    expand_csr(c, col16.data() + begin, count, w, codebook.data(), out);
  else
    expand_csr(c, col32.data() + begin, count, w, codebook.data(), out);
}

void GatherKernel::compute(OrtKernelContext* context) const {
  with_layer(prefix_, [&] {
    const Ort::KernelContext ctx(context);
    const Ort::ConstValue indices_value = ctx.GetInput(0);
    const std::vector<int64_t> indices = checked_indices(indices_value, rows_);
    std::vector<int64_t> y_shape = indices_value.GetTensorTypeAndShapeInfo().GetShape();
    y_shape.insert(y_shape.end(), row_shape_.begin(), row_shape_.end());
    float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
    const auto n = static_cast<int64_t>(indices.size());
    if (n == 0) return;
    // Every row is independent and written whole by one task: same bits on any thread count.
    const size_t tasks = n * width_ < kParallelFloats ? 1 : task_count(n, static_cast<double>(width_));
    const int64_t chunk = (n + static_cast<int64_t>(tasks) - 1) / static_cast<int64_t>(tasks);
    parallel_for(ctx, static_cast<size_t>((n + chunk - 1) / chunk), [&](size_t t) {
      const int64_t i0 = static_cast<int64_t>(t) * chunk;
      const int64_t i1 = std::min(n, i0 + chunk);
      for (int64_t i = i0; i < i1; ++i)
        table_->expand_row(static_cast<size_t>(indices[static_cast<size_t>(i)]), y + i * width_);
    });
  });
}

}  // namespace dc_onnx
