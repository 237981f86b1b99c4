// An allocator for the large resident arrays that a Run streams through (the grouped FC
// form's indices and lane weights): blocks of 2 MiB or more are 2 MiB-aligned and
// their whole 2 MiB pages advised as transparent huge pages (Linux, MADV_HUGEPAGE), so
// a Run that finds the weight evicted by other work (in an alternating benchmark, the
// dense model's 64 MB) walks a few page-table entries instead of one per 4 KiB.
// The tail past the last whole huge page keeps ordinary pages, so at most the
// alignment's virtual address space is added, never resident memory. Where the kernel
// does not grant huge pages (THP off), this is an ordinary aligned allocation.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace dc_onnx {

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t{2} << 20;

  HugePageAllocator() = default;
  template <typename U>
  explicit HugePageAllocator(const HugePageAllocator<U>&) {}

  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T) - kHuge) throw std::bad_alloc();
    const size_t bytes = n * sizeof(T);
    if (bytes < kHuge) return static_cast<T*>(::operator new(bytes));
    void* p = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
    if (p == nullptr) throw std::bad_alloc();
#ifdef __linux__
    madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);  // advice: a failure changes nothing
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) < kHuge)
      ::operator delete(p);
    else
      std::free(p);
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const { return false; }
};

template <typename T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace dc_onnx
