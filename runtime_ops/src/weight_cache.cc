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
  if (!has_input(info, 1)) return {};  // decoding says what is missing
  // The same check and message as decoding's (weight_loader.cc), only earlier.
  const ConstantTensor header = constant_tensor(info, 1, "input 1 (header)");
  const uint8_t* data = header.data;
  const size_t size = header.count;
  if (header.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || data == nullptr ||
      peek_format_version(data, size) < kWholeFileVersion)
    return {};
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
