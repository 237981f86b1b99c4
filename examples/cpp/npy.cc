// .npy version 1-3 reader for float32 arrays, and raw little-endian float32 files.
#include "npy.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <stdexcept>

namespace {

std::vector<char> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

InputTensor ParseNpy(const std::string& path, const std::vector<char>& bytes) {
  // Magic, major, minor, then the header length: 2 bytes (v1) or 4 bytes (v2, v3).
  if (bytes.size() < 10) throw std::runtime_error(path + ": truncated .npy header");
  const auto major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw std::runtime_error(path + ": truncated .npy header");
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    offset = 12;
  } else {
    throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (bytes.size() < offset + header_len) throw std::runtime_error(path + ": truncated .npy header");
  const std::string header(bytes.data() + offset, header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']*)'")) || m[1] != "<f4")
    throw std::runtime_error(path + ": expected a float32 array ('<f4'), header: " + header);
  if (std::regex_search(header, m, std::regex("'fortran_order':\\s*True")))
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    throw std::runtime_error(path + ": .npy header without a shape");
  InputTensor tensor;
  const std::string dims = m[1];
  const std::regex number("[0-9]+");
  size_t count = 1;
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    tensor.shape.push_back(std::stoll(it->str()));
    count *= static_cast<size_t>(tensor.shape.back());
  }
  const size_t data_offset = offset + header_len;
  if (bytes.size() - data_offset != count * sizeof(float))
    throw std::runtime_error(path + ": data size does not match the shape in its header");
  tensor.data.resize(count);
  std::memcpy(tensor.data.data(), bytes.data() + data_offset, count * sizeof(float));
  return tensor;
}

}  // namespace

InputTensor ReadInput(const std::string& path) {
  const std::vector<char> bytes = ReadAll(path);
  if (bytes.size() >= 6 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0) return ParseNpy(path, bytes);
  if (bytes.empty() || bytes.size() % sizeof(float) != 0)
    throw std::runtime_error(path + ": a raw input must hold whole float32 values");
  InputTensor tensor;
  tensor.data.resize(bytes.size() / sizeof(float));
  std::memcpy(tensor.data.data(), bytes.data(), bytes.size());
  return tensor;
}
