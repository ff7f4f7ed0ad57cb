#include "train/safetensors.h"

#include <yaml-cpp/yaml.h>

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "core/bf16.h"
#include "core/error.h"
#include "core/ops.h"
#include "data/json.h"

namespace infllm::train {
namespace fs = std::filesystem;
namespace {

// The safetensors library refuses headers above 100 MB; a larger length is a damaged file.
constexpr uint64_t kMaxHeader = 100'000'000;

struct Entry {
  std::string name, dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

size_t element_size(const std::string& path, const std::string& name, const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  static const std::set<std::string> other{"F64", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16",
                                           "I8",  "U64",     "U32",     "U16", "U8",  "BOOL"};
  INFLLM_CHECK(!other.contains(dtype), path, ": tensor '", name, "' has dtype ", dtype,
               ", which infllm does not read (supported: F32, BF16, F16)");
  ::infllm::fail(path, ": tensor '", name, "' has unknown dtype '", dtype,
                 "' (safetensors dtypes are F32, BF16, F16, I64, ...)");
}

uint64_t as_offset(const std::string& path, const std::string& what, const YAML::Node& node) {
  try {
    const int64_t value = node.as<int64_t>();
    INFLLM_CHECK(value >= 0, path, ": ", what, " is negative (", value, ")");
    return uint64_t(value);
  } catch (const YAML::Exception&) {
    ::infllm::fail(path, ": ", what, " is not a whole number");
  }
}

Entry parse_entry(const std::string& path, const std::string& name, const YAML::Node& node) {
  const std::string where = "header entry '" + name + "'";
  INFLLM_CHECK(node.IsMap(), path, ": ", where, " is not an object");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    INFLLM_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", path, ": ", where,
                 " has unknown key '", key, "' (expected dtype, shape, data_offsets)");
  }
  Entry e;
  e.name = name;
  INFLLM_CHECK(node["dtype"] && node["dtype"].IsScalar(), path, ": ", where, " has no dtype");
  e.dtype = node["dtype"].as<std::string>();
  INFLLM_CHECK(node["shape"] && node["shape"].IsSequence(), path, ": ", where,
               " has no shape list");
  for (size_t i = 0; i < node["shape"].size(); ++i)
    e.shape.push_back(
        int64_t(as_offset(path, where + " shape[" + std::to_string(i) + "]", node["shape"][i])));
  const YAML::Node offsets = node["data_offsets"];
  INFLLM_CHECK(offsets && offsets.IsSequence() && offsets.size() == 2, path, ": ", where,
               " needs data_offsets [begin, end]");
  e.begin = as_offset(path, where + " data_offsets[0]", offsets[0]);
  e.end = as_offset(path, where + " data_offsets[1]", offsets[1]);
  return e;
}

// The header, checked against the data section's size: offsets in range, not overlapping, and
// each tensor's bytes those of its shape and dtype.
std::vector<Entry> parse_header(const std::string& path, const std::string& json,
                                uint64_t data_size, std::map<std::string, std::string>& metadata) {
  YAML::Node root;
  try {
    root = YAML::Load(json);
  } catch (const YAML::Exception& e) {
    ::infllm::fail(path, ": the header is not valid JSON: ", e.what());
  }
  INFLLM_CHECK(root.IsMap(), path, ": the header is not a JSON object");
  std::vector<Entry> entries;
  std::set<std::string> names;
  for (const auto& kv : root) {
    const std::string name = kv.first.as<std::string>();
    INFLLM_CHECK(names.insert(name).second, path, ": tensor '", name, "' appears twice");
    if (name == "__metadata__") {
      INFLLM_CHECK(kv.second.IsMap(), path, ": __metadata__ is not an object");
      for (const auto& m : kv.second) {
        INFLLM_CHECK(m.second.IsScalar(), path, ": __metadata__ value '", m.first.as<std::string>(),
                     "' is not a string");
        metadata[m.first.as<std::string>()] = m.second.as<std::string>();
      }
      continue;
    }
    Entry e = parse_entry(path, name, kv.second);
    const size_t size = element_size(path, name, e.dtype);
    INFLLM_CHECK(e.begin <= e.end, path, ": tensor '", name, "' data_offsets [", e.begin, ", ",
                 e.end, "] end before they begin");
    INFLLM_CHECK(e.end <= data_size, path, ": tensor '", name, "' data_offsets [", e.begin, ", ",
                 e.end, "] run past the data section (", data_size,
                 " bytes; is the file truncated?)");
    const uint64_t expected = uint64_t(shape_numel(e.shape)) * size;
    INFLLM_CHECK(e.end - e.begin == expected, path, ": tensor '", name, "' of shape ",
                 shape_str(e.shape), " ", e.dtype, " needs ", expected,
                 " bytes, its data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin);
    entries.push_back(std::move(e));
  }
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& a = *by_offset[i - 1];
    const Entry& b = *by_offset[i];
    INFLLM_CHECK(b.begin >= a.end || a.begin == a.end || b.begin == b.end, path, ": tensors '",
                 a.name, "' [", a.begin, ", ", a.end, ") and '", b.name, "' [", b.begin, ", ",
                 b.end, ") overlap");
  }
  return entries;
}

Tensor decode(const std::string& dtype, const std::vector<char>& bytes, const Shape& shape) {
  Tensor out = Tensor::empty(shape, DType::f32);
  float* dst = out.data<float>();
  const int64_t n = out.numel();
  if (dtype == "F32") {
    std::memcpy(dst, bytes.data(), size_t(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      if (dtype == "BF16") {
        dst[i] = bf16_to_float(bf16{bits});
      } else {  // F16: sign, 5 exponent bits, 10 mantissa bits
        const uint32_t sign = uint32_t(bits >> 15) << 31, exp = (bits >> 10) & 0x1f,
                       man = bits & 0x3ff;
        float f;
        if (exp == 0) {
          f = std::ldexp(float(man), -24);
        } else if (exp == 31) {
          f = man ? std::numeric_limits<float>::quiet_NaN()
                  : std::numeric_limits<float>::infinity();
        } else {
          f = std::ldexp(float(man | 0x400), int(exp) - 25);
        }
        uint32_t u;
        std::memcpy(&u, &f, 4);
        u |= sign;
        std::memcpy(&dst[i], &u, 4);
      }
    }
  }
  return out;
}

}  // namespace

Safetensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  INFLLM_CHECK(in.good(), path, ": cannot open the safetensors file");
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  INFLLM_CHECK(!ec, path, ": cannot read its size: ", ec.message());
  INFLLM_CHECK(file_size >= 8, path, ": ", file_size,
               " bytes is too short for the 8-byte header length; not a safetensors file");
  unsigned char length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | length_bytes[i];
  INFLLM_CHECK(header_len <= kMaxHeader && header_len <= file_size - 8, path,
               ": bad header length ", header_len, " (the file has ", file_size - 8,
               " bytes after it, and headers are at most 100 MB); not a safetensors file, or "
               "truncated");
  std::string json(header_len, '\0');
  in.read(json.data(), std::streamsize(header_len));
  INFLLM_CHECK(in.good(), path, ": cannot read the ", header_len, "-byte header");
  Safetensors result;
  const uint64_t data_start = 8 + header_len;
  const std::vector<Entry> entries =
      parse_header(path, json, file_size - data_start, result.metadata);
  std::map<std::string, Tensor> tensors;
  for (const Entry& e : entries) {
    std::vector<char> bytes(e.end - e.begin);
    in.seekg(std::streamoff(data_start + e.begin));
    in.read(bytes.data(), std::streamsize(bytes.size()));
    INFLLM_CHECK(in.good(), path, ": cannot read tensor '", e.name, "'");
    tensors[e.name] = decode(e.dtype, bytes, e.shape);
    result.dtypes[e.name] = e.dtype;
  }
  result.tensors.assign(tensors.begin(), tensors.end());
  return result;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors, DType dtype,
                       const std::map<std::string, std::string>& metadata) {
  INFLLM_CHECK(dtype == DType::f32 || dtype == DType::bf16, path,
               ": safetensors are written as f32 or bf16, not ", dtype_name(dtype));
  const size_t size = dtype_size(dtype);
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
      header += (it == metadata.begin() ? "" : ",") + data::json_quote(it->first) + ":" +
                data::json_quote(it->second);
    header += "}";
  }
  std::set<std::string> names;
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    INFLLM_CHECK(names.insert(name).second && name != "__metadata__", path, ": tensor name '", name,
                 "' is taken twice (or reserved)");
    Tensor t = ops::cast(tensor.detach().to(Device::cpu()), dtype).contiguous();
    const uint64_t bytes = uint64_t(t.numel()) * size;
    std::string shape;
    for (const int64_t d : t.shape()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    header += (header.size() > 1 ? "," : "") + data::json_quote(name) + ":{\"dtype\":\"" +
              (dtype == DType::f32 ? "F32" : "BF16") + "\",\"shape\":[" + shape +
              "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
    host.push_back(std::move(t));
  }
  header += "}";
  // The format recommends an 8-byte aligned data section; spaces are valid JSON padding.
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    INFLLM_CHECK(out.good(), path, ": cannot create ", tmp);
    unsigned char length_bytes[8];
    for (int i = 0; i < 8; ++i) length_bytes[i] = (uint64_t(header.size()) >> (8 * i)) & 0xff;
    out.write(reinterpret_cast<const char*>(length_bytes), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (const Tensor& t : host)
      out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.nbytes()));
    out.flush();
    if (!out.good()) {
      fs::remove(tmp);
      ::infllm::fail(path, ": writing ", tmp, " failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp);
  INFLLM_CHECK(!ec, path, ": cannot rename ", tmp, " over it: ", ec.message());
}

Safetensors read_safetensors_folder(const std::string& dir) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (!fs::exists(index)) {
    const fs::path single = fs::path(dir) / "model.safetensors";
    INFLLM_CHECK(fs::exists(single), dir,
                 ": neither model.safetensors nor model.safetensors.index.json is there");
    return read_safetensors(single.string());
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(index.string());
  } catch (const YAML::Exception& e) {
    ::infllm::fail(index.string(), ": not valid JSON: ", e.what());
  }
  INFLLM_CHECK(root.IsMap() && root["weight_map"] && root["weight_map"].IsMap(), index.string(),
               ": no weight_map object");
  std::map<std::string, std::string> shard_of;
  for (const auto& kv : root["weight_map"])
    shard_of[kv.first.as<std::string>()] = kv.second.as<std::string>();
  std::set<std::string> shards;
  for (const auto& [name, shard] : shard_of) shards.insert(shard);
  Safetensors result;
  std::map<std::string, Tensor> tensors;
  for (const std::string& shard : shards) {
    INFLLM_CHECK(shard.find('/') == std::string::npos, index.string(), ": shard '", shard,
                 "' is not a file name in the model folder");
    Safetensors part = read_safetensors((fs::path(dir) / shard).string());
    for (auto& [name, tensor] : part.tensors) {
      const auto listed = shard_of.find(name);
      INFLLM_CHECK(listed != shard_of.end() && listed->second == shard, shard, ": tensor '", name,
                   "' is not in ", index.string(), "'s weight_map for this shard");
      tensors[name] = tensor;
      result.dtypes[name] = part.dtypes[name];
    }
    result.metadata.insert(part.metadata.begin(), part.metadata.end());
  }
  for (const auto& [name, shard] : shard_of)
    INFLLM_CHECK(tensors.contains(name), index.string(), ": tensor '", name, "' is listed in ",
                 shard, " but that shard does not hold it");
  result.tensors.assign(tensors.begin(), tensors.end());
  return result;
}

}  // namespace infllm::train
