// Scratch memory for one Run of a kernel, taken from the session's CPU allocator: ORT's
// arena unless the session turned it off. The arena keeps a freed block, so the next
// layer and the next Run reuse the same pages instead of mapping and faulting in fresh
// ones each time (a 55 MB std::vector per VGG-16 conv layer did that before), and
// concurrent Runs of one session each take their own block (the arena is thread-safe).
// Where the context has no allocator (a host that serves none), the block comes from the
// heap, freed at the end of the Run as before.
#pragma once

#include <cstddef>

#include "ort_api.h"

namespace dc_onnx {

class Scratch {
 public:
  // `floats` floats, 64-byte aligned, contents undefined.
  Scratch(const Ort::KernelContext& ctx, size_t floats);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  float* data() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;  // null: raw_ came from operator new
  void* raw_ = nullptr;
  float* data_ = nullptr;
};

}  // namespace dc_onnx
