#include "weight_cache.h"

#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernel_info.h"
#include "side_file.h"

namespace dc_onnx {
namespace {

std::mutex g_mutex;
std::unordered_map<std::string, std::weak_ptr<const void>> g_forms;

void drop_expired() {
  for (auto it = g_forms.begin(); it != g_forms.end();)
    it = it->second.expired() ? g_forms.erase(it) : std::next(it);
}

}  // namespace

std::string weight_identity(const OrtKernelInfo* info, int64_t rows, int64_t cols) {
  if (!has_input(info, 1)) return {};
  int is_constant = 0;
  const OrtValue* value = nullptr;
  if (!ok(Ort::GetApi().KernelInfoGetConstantInput_tensor(info, 1, &is_constant, &value)) ||
      !is_constant || value == nullptr)
    return {};
  Ort::ConstValue v{value};
  if (!v.IsTensor()) return {};
  const size_t size = v.GetTensorTypeAndShapeInfo().GetElementCount();
  const auto* data = static_cast<const uint8_t*>(v.GetTensorRawData());
  if (data == nullptr || peek_format_version(data, size) < kWholeFileVersion) return {};
  uint32_t toc_crc = 0;  // bytes 16-19 of the header (docs/format.md, "Side file")
  std::memcpy(&toc_crc, data + 16, sizeof toc_crc);
  std::string id = std::to_string(reinterpret_cast<uintptr_t>(data)) + ':' +
                   std::to_string(size) + ':' + std::to_string(toc_crc) + '|' +
                   std::to_string(rows) + 'x' + std::to_string(cols);
  for (const char* name : {"num_entries", "index_bits"})
    id += '|' + std::to_string(attr_int(info, name).value_or(-1));
  for (const int64_t s : attr_ints(info, "stream_ids").value_or(std::vector<int64_t>{}))
    id += ',' + std::to_string(s);
  return id;
}

namespace detail {

std::shared_ptr<const void> find_form(const std::string& key) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = g_forms.find(key);
  return it == g_forms.end() ? nullptr : it->second.lock();
}

std::shared_ptr<const void> keep_form(const std::string& key, std::shared_ptr<const void> form) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  drop_expired();  // bounded by the forms alive, not by the sessions ever made
  std::weak_ptr<const void>& slot = g_forms[key];
  if (auto kept = slot.lock()) return kept;
  slot = form;
  return form;
}

}  // namespace detail
}  // namespace dc_onnx
