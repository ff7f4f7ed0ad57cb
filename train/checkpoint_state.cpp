// CheckpointState's lookups and the checks around it: a state's names and keys before it is
// written, its finiteness, and the checksums of its metadata and tensors (train/checkpoint.h).
#include <algorithm>
#include <bit>
#include <cmath>
#include <set>

#include "core/ops.h"
#include "train/checkpoint.h"
#include "train/checkpoint_format.h"
#include "train/checksum.h"

namespace infllm::train {

namespace checkpoint_format {
namespace {

bool valid_tensor_name(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.back() == '/') return false;
  size_t begin = 0;
  while (begin <= name.size()) {
    size_t end = name.find('/', begin);
    if (end == std::string::npos) end = name.size();
    const std::string_view part(name.data() + begin, end - begin);
    if (part.empty() || part == "." || part == "..") return false;
    begin = end + 1;
  }
  return true;
}

}  // namespace

void check_state(const std::string& path, const CheckpointState& state) {
  INFLLM_CHECK(state.step >= 0, "checkpoint '", path, "': step ", state.step,
               " is negative; steps count from 0");
  std::vector<std::string> names;
  for (const auto& [name, tensor] : state.tensors) {
    INFLLM_CHECK(valid_tensor_name(name), "checkpoint '", path, "': tensor name '", name,
                 "' is not a valid path; use '/'-separated non-empty parts such as "
                 "\"optim/master/layers.0.wq\"");
    INFLLM_CHECK(name.find_first_of("\t\n") == std::string::npos, "checkpoint '", path,
                 "': tensor name '", name, "' holds a tab or a newline; rename it");
    INFLLM_CHECK(tensor.defined(), "checkpoint '", path, "': tensor '", name,
                 "' is undefined (an empty Tensor); give it a value or leave it out");
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i < names.size(); ++i) {
    INFLLM_CHECK(i == 0 || names[i] != names[i - 1], "checkpoint '", path, "': tensor '", names[i],
                 "' appears twice; each name holds one tensor");
    // "a" and "a/b" cannot both exist: "a" would be a dataset and a group at once. Names under
    // "a/" sort right after "a/" (other names starting with "a" sort before or far after).
    const std::string group = names[i] + "/";
    const auto under = std::lower_bound(names.begin(), names.end(), group);
    INFLLM_CHECK(under == names.end() || !under->starts_with(group), "checkpoint '", path,
                 "': tensor '", names[i], "' is also the group of '", *under,
                 "'; rename one of them");
  }
  std::map<std::string, const char*> seen;
  auto check_keys = [&](const auto& values, const char* kind) {
    for (const auto& [key, value] : values) {
      INFLLM_CHECK(!key.empty(), "checkpoint '", path, "': an empty ", kind, " key; name it");
      INFLLM_CHECK(key.find_first_of("\t\n") == std::string::npos, "checkpoint '", path,
                   "': ", kind, " key '", key, "' holds a tab or a newline; rename it");
      INFLLM_CHECK(
          std::find(kReservedKeys.begin(), kReservedKeys.end(), key) == kReservedKeys.end(),
          "checkpoint '", path, "': ", kind, " key '", key,
          "' is reserved (format, format_version, step, checksum, checksums); rename it (the "
          "step goes in CheckpointState::step)");
      const auto [other, fresh] = seen.emplace(key, kind);
      INFLLM_CHECK(fresh, "checkpoint '", path, "': key '", key, "' is both a ", other->second,
                   " and a ", kind, "; each attribute key holds one value");
    }
  };
  check_keys(state.strings, "string");
  check_keys(state.integers, "integer");
  check_keys(state.numbers, "number");
}

std::string tensor_checksum(const std::string& name, DType dtype, const Shape& shape,
                            const void* bytes, size_t size) {
  Xxh64 hash;
  hash.update_field("tensor");
  hash.update_field(name);
  hash.update_field(dtype_name(dtype));
  hash.update_u64(shape.size());
  for (int64_t dim : shape) hash.update_u64(uint64_t(dim));
  hash.update(bytes, size);
  return checksum_text(hash.digest());
}

std::string attribute_checksum(const std::string& key, const AttributeValue& value) {
  Xxh64 hash;
  if (const auto* text = std::get_if<std::string>(&value)) {
    hash.update_field("string");
    hash.update_field(key);
    hash.update_field(*text);
  } else if (const auto* integer = std::get_if<int64_t>(&value)) {
    hash.update_field("integer");
    hash.update_field(key);
    hash.update_u64(uint64_t(*integer));
  } else {
    hash.update_field("number");
    hash.update_field(key);
    hash.update_u64(std::bit_cast<uint64_t>(std::get<double>(value)));
  }
  return checksum_text(hash.digest());
}

std::string ChecksumTable::text() const {
  std::string out;
  for (const auto& [key, sum] : attributes) out += "attribute\t" + key + "\t" + sum + "\n";
  for (const auto& [name, sum] : tensors) out += "tensor\t" + name + "\t" + sum + "\n";
  return out;
}

std::optional<ChecksumTable> ChecksumTable::parse(std::string_view text) {
  ChecksumTable table;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    if (end == std::string_view::npos) return std::nullopt;
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end + 1);
    const size_t first = line.find('\t'), last = line.rfind('\t');
    if (first == std::string_view::npos || first == last) return std::nullopt;
    const std::string_view kind = line.substr(0, first);
    const std::string key(line.substr(first + 1, last - first - 1));
    const std::string sum(line.substr(last + 1));
    auto& entries = kind == "attribute" ? table.attributes : table.tensors;
    if ((kind != "attribute" && kind != "tensor") || !entries.emplace(key, sum).second)
      return std::nullopt;
  }
  return table;
}

void verify_metadata(const std::string& path, const ChecksumTable& table,
                     const std::map<std::string, AttributeValue>& attributes,
                     const std::vector<std::string>& tensor_names) {
  for (const auto& [key, value] : attributes) {
    const auto listed = table.attributes.find(key);
    if (listed == table.attributes.end())
      fail_damaged(path, "attribute '", key,
                   "' is not in the checksum table (its name was changed, or it was added "
                   "after the file was written); ",
                   kDamagedHint);
    const std::string sum = attribute_checksum(key, value);
    if (sum != listed->second)
      fail_damaged(path, "attribute '", key, "' does not match its checksum (stored ",
                   listed->second, ", computed ", sum, "); ", kDamagedHint);
  }
  for (const auto& [key, sum] : table.attributes) {
    if (!attributes.contains(key))
      fail_damaged(path, "attribute '", key, "' is missing (the checksum table lists it); ",
                   kDamagedHint);
  }
  const std::set<std::string> present(tensor_names.begin(), tensor_names.end());
  for (const std::string& name : present) {
    if (!table.tensors.contains(name))
      fail_damaged(path, "tensor '", name,
                   "' is not in the checksum table (its name was changed, or it was added "
                   "after the file was written); ",
                   kDamagedHint);
  }
  for (const auto& [name, sum] : table.tensors) {
    if (!present.contains(name))
      fail_damaged(path, "tensor '", name, "' is missing (the checksum table lists it); ",
                   kDamagedHint);
  }
}

}  // namespace checkpoint_format

namespace {

// The index of the first non-finite element of a host tensor, or -1.
int64_t first_non_finite(const Tensor& host) {
  const int64_t n = host.numel();
  if (host.dtype() == DType::bf16) {  // exponent all ones: Inf or NaN
    const auto* bits = static_cast<const uint16_t*>(host.data_ptr());
    for (int64_t i = 0; i < n; ++i)
      if ((bits[i] & 0x7F80u) == 0x7F80u) return i;
    return -1;
  }
  return visit_f32_f64(host.dtype(), "require_finite", [&]<class T>() -> int64_t {
    const T* values = host.data<T>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(values[i])) return i;
    return -1;
  });
}

const char* const kNonFiniteHint =
    "refusing to write a checkpoint of non-finite state (every run resumed from it would be "
    "NaN); the checkpoints written before stay as they are";

}  // namespace

void require_finite(const CheckpointState& state, const std::string& path) {
  for (const auto& [name, tensor] : state.tensors) {
    if (!tensor.defined() || !is_floating(tensor.dtype()) || tensor.numel() == 0) continue;
    if (tensor.device().is_cuda()) {
      // x * 0 is 0 for every finite x and NaN for NaN and Inf; the sum keeps any NaN. One
      // scalar comes back instead of the whole tensor.
      const Tensor probe = ops::cast(ops::sum(ops::mul(tensor, 0.0)), DType::f32);
      const float total = probe.to(Device::cpu()).to_vector<float>()[0];
      INFLLM_CHECK(std::isfinite(total), "checkpoint '", path, "': tensor '", name,
                   "' holds a NaN or an Inf; ", kNonFiniteHint);
      continue;
    }
    const Tensor host = tensor.contiguous();
    const int64_t index = first_non_finite(host);
    if (index < 0) continue;
    const double value = host.dtype() == DType::bf16
                             ? double(bf16_to_float(host.data<bf16>()[index]))
                         : host.dtype() == DType::f64 ? host.data<double>()[index]
                                                      : double(host.data<float>()[index]);
    fail("checkpoint '", path, "': tensor '", name, "' ", shape_str(host.shape()), " holds ", value,
         " at element ", index, "; ", kNonFiniteHint);
  }
}

// ---------------------------------------------------------------------------------------------
// CheckpointState lookups

namespace {

std::string source_name(const CheckpointState& state) {
  return state.source.empty() ? std::string("(in memory)") : state.source;
}

const char* const kOtherRunHint =
    "was it written by a different model or optimizer configuration? the run that wrote it is "
    "in its 'recipe' attribute";

// `values` is a map or a list of pairs.
template <class Values>
const auto& require_value(const CheckpointState& state, const Values& values,
                          const std::string& key, const char* kind) {
  const auto found = std::find_if(values.begin(), values.end(),
                                  [&](const auto& item) { return item.first == key; });
  INFLLM_CHECK(found != values.end(), "checkpoint '", source_name(state), "': missing ", kind, " '",
               key, "' (it has ", values.size(), " ", kind, "s); ", kOtherRunHint);
  return found->second;
}

}  // namespace

const Tensor& CheckpointState::require_tensor(const std::string& name) const {
  return require_value(*this, tensors, name, "tensor");
}

const Tensor& CheckpointState::require_tensor(const std::string& name, const Shape& shape,
                                              DType dtype) const {
  const Tensor& tensor = require_tensor(name);
  INFLLM_CHECK(tensor.shape() == shape && tensor.dtype() == dtype, "checkpoint '",
               source_name(*this), "': tensor '", name, "' is ", shape_str(tensor.shape()), " ",
               dtype_name(tensor.dtype()), ", expected ", shape_str(shape), " ", dtype_name(dtype),
               "; ", kOtherRunHint);
  return tensor;
}

const std::string& CheckpointState::require_string(const std::string& key) const {
  return require_value(*this, strings, key, "string");
}

int64_t CheckpointState::require_integer(const std::string& key) const {
  return require_value(*this, integers, key, "integer");
}

double CheckpointState::require_number(const std::string& key) const {
  return require_value(*this, numbers, key, "number");
}

}  // namespace infllm::train
