// One resident form per stored weight, however many nodes read it. An unrolled RNN reads
// the same weight at every time step (one node per step); each node's kernel asks here
// before decoding, so the weight is decoded and held once while any of them lives.
#pragma once

#include <memory>
#include <string>
#include <typeinfo>
#include <utility>

#include "ort_api.h"

namespace dc_onnx {

// What identifies the weight the node of `info` reads as a [rows, cols] matrix: the
// side file it sees (the address and size of its header input, and the CRC-32 of its
// table of contents), its stream_ids, num_entries and index_bits. Nodes of one session
// that read one initializer see one address. Empty when the weight cannot be shared:
// format versions 1-2, whose streams are node inputs of their own, or an input that is
// not a side file (decoding then reports why).
std::string weight_identity(const OrtKernelInfo* info, int64_t rows, int64_t cols);

namespace detail {
std::shared_ptr<const void> find_form(const std::string& key);
// Registers `form` under `key` unless another thread did first; returns the one kept.
std::shared_ptr<const void> keep_form(const std::string& key, std::shared_ptr<const void> form);
}  // namespace detail

// The Form registered under `identity` and `params` while some kernel still holds it;
// otherwise make()'s, registered for the next reader. The registry holds weak pointers
// only: a form is freed with the last kernel that holds it. An empty identity is never
// shared. `params` names whatever besides the weight shapes the form (a conv's taps).
template <typename Form, typename Make>
std::shared_ptr<const Form> shared_form(const std::string& identity, const std::string& params,
                                        Make&& make) {
  if (identity.empty()) return std::make_shared<const Form>(make());
  const std::string key = std::string(typeid(Form).name()) + '|' + identity + '|' + params;
  if (auto found = detail::find_form(key)) return std::static_pointer_cast<const Form>(found);
  // Decoded outside the lock: two sessions created at once may both decode; one is kept.
  auto made = std::make_shared<const Form>(make());
  return std::static_pointer_cast<const Form>(detail::keep_form(key, std::move(made)));
}

}  // namespace dc_onnx
