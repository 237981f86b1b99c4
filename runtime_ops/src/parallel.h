// Runs tasks on the session's intra-op thread pool (KernelContext_ParallelFor, API 17)
// with a lambda instead of a C callback. Task bodies must not throw.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ort_api.h"

namespace dc_onnx {

template <typename F>
void parallel_for(const Ort::KernelContext& ctx, size_t num_tasks, F&& task) {
  if (num_tasks == 0) return;
  if (num_tasks == 1) {  // skip the pool round trip
    task(size_t{0});
    return;
  }
  using Fn = std::remove_reference_t<F>;
  ctx.ParallelFor([](void* data, size_t i) { (*static_cast<Fn*>(data))(i); }, num_tasks, 0,
                  const_cast<void*>(static_cast<const void*>(&task)));
}

// Splits `total` items into tasks of roughly `work_per_task` units when each item costs
// `work_per_item`: enough tasks to balance, not so many that scheduling dominates.
inline size_t task_count(int64_t total, double work_per_item, double work_per_task = 32768.0) {
  if (total <= 0) return 0;
  const double want = static_cast<double>(total) * work_per_item / work_per_task;
  const double capped = want < 1.0 ? 1.0 : (want > 1024.0 ? 1024.0 : want);
  const auto n = static_cast<size_t>(capped);
  return n > static_cast<size_t>(total) ? static_cast<size_t>(total) : n;
}

}  // namespace dc_onnx
