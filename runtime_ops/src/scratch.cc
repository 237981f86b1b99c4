#include "scratch.h"

#include <cstdint>
#include <new>

#include "kernel_info.h"

namespace dc_onnx {
namespace {

constexpr size_t kAlign = 64;

OrtAllocator* session_allocator(const Ort::KernelContext& ctx) {
  const OrtApi& api = Ort::GetApi();
  OrtMemoryInfo* cpu = nullptr;
  if (!ok(api.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu))) return nullptr;
  OrtAllocator* allocator = nullptr;
  if (!ok(api.KernelContext_GetAllocator(ctx.GetOrtKernelContext(), cpu, &allocator)))
    allocator = nullptr;
  api.ReleaseMemoryInfo(cpu);
  return allocator;
}

}  // namespace

Scratch::Scratch(const Ort::KernelContext& ctx, size_t floats) {
  const size_t bytes = floats * sizeof(float) + kAlign;
  allocator_ = session_allocator(ctx);
  if (allocator_ != nullptr) {
    try {
      raw_ = allocator_->Alloc(allocator_, bytes);
    } catch (...) {
      raw_ = nullptr;
    }
    if (raw_ == nullptr) {
      Ort::GetApi().ReleaseAllocator(allocator_);
      throw std::bad_alloc();
    }
  } else {
    raw_ = ::operator new(bytes);
  }
  auto address = reinterpret_cast<uintptr_t>(raw_);
  address = (address + kAlign - 1) / kAlign * kAlign;
  data_ = reinterpret_cast<float*>(address);
}

Scratch::~Scratch() {
  if (allocator_ == nullptr) {
    ::operator delete(raw_);
    return;
  }
  allocator_->Free(allocator_, raw_);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

}  // namespace dc_onnx
