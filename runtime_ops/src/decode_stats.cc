#include "decode_stats.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "simd.h"

namespace dc_onnx {
namespace {

// `s` as a JSON string literal: quotes, backslashes and control characters escaped.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::mutex g_file_mutex;  // sessions may be created from several threads

}  // namespace

void report_decode_stats(const std::string& layer, const CsrMatrix& csr) {
  const char* path = std::getenv(kDecodeStatsEnv);
  if (path == nullptr || *path == '\0') return;
  const std::string line =
      "{\"layer\": " + json_string(layer) + ", \"rows\": " + std::to_string(csr.rows) +
      ", \"cols\": " + std::to_string(csr.cols) + ", \"nonzeros\": " +
      std::to_string(csr.code.size()) + ", \"symbols\": " + std::to_string(csr.symbols) +
      ", \"decode_ns\": " + std::to_string(csr.decode_ns) + ", \"isa\": \"" +
      isa_name(isa()) + "\"}\n";
  const std::lock_guard<std::mutex> lock(g_file_mutex);
  std::FILE* f = std::fopen(path, "a");
  if (f == nullptr) return;
  std::fwrite(line.data(), 1, line.size(), f);
  std::fclose(f);
}

}  // namespace dc_onnx
