#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>
#include <variant>

#include "data/hdf5_handle.h"
#include "train/recipe.h"

namespace infllm::train {

namespace {

namespace fs = std::filesystem;
using data::H5Handle;

constexpr const char* kFormat = "infllm-checkpoint";
constexpr int64_t kFormatVersion = 1;
constexpr std::array<std::string_view, 3> kReservedKeys = {"format", "format_version", "step"};
constexpr std::array<DType, 7> kAllDTypes = {DType::f32, DType::bf16, DType::f64, DType::i32,
                                             DType::i64, DType::u16,  DType::u32};

const char* const kDamagedHint =
    "the file is damaged or truncated (an interrupted copy or a full disk?); resume from an "
    "earlier step_*.h5 checkpoint beside it";

template <class... Parts>
[[noreturn]] void fail_checkpoint(const std::string& path, const Parts&... parts) {
  fail("checkpoint '", path, "': ", parts...);
}

// HDF5 prints its error stack to stderr by default; here every failure becomes an infllm::Error
// instead, so the stack is silenced while one save or load runs (under hdf5_mutex).
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &function_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, function_, data_); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t function_ = nullptr;
  void* data_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Element types: little-endian on disk; bf16 travels as its 16-bit pattern.

hid_t disk_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return H5T_IEEE_F32LE;
    case DType::f64:
      return H5T_IEEE_F64LE;
    case DType::i32:
      return H5T_STD_I32LE;
    case DType::i64:
      return H5T_STD_I64LE;
    case DType::bf16:
    case DType::u16:
      return H5T_STD_U16LE;
    case DType::u32:
      return H5T_STD_U32LE;
  }
  fail("checkpoint: unknown dtype ", int(dtype));
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return H5T_NATIVE_FLOAT;
    case DType::f64:
      return H5T_NATIVE_DOUBLE;
    case DType::i32:
      return H5T_NATIVE_INT32;
    case DType::i64:
      return H5T_NATIVE_INT64;
    case DType::bf16:
    case DType::u16:
      return H5T_NATIVE_UINT16;
    case DType::u32:
      return H5T_NATIVE_UINT32;
  }
  fail("checkpoint: unknown dtype ", int(dtype));
}

// The DType whose values a dataset of HDF5 type `type` holds exactly (u16 also carries bf16).
std::optional<DType> dtype_of_disk_type(hid_t type) {
  const H5T_class_t kind = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (kind == H5T_FLOAT && size == 4) return DType::f32;
  if (kind == H5T_FLOAT && size == 8) return DType::f64;
  if (kind != H5T_INTEGER) return std::nullopt;
  const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
  if (is_signed && size == 4) return DType::i32;
  if (is_signed && size == 8) return DType::i64;
  if (!is_signed && size == 2) return DType::u16;
  if (!is_signed && size == 4) return DType::u32;
  return std::nullopt;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType dtype : kAllDTypes) {
    if (name == dtype_name(dtype)) return dtype;
  }
  return std::nullopt;
}

std::string describe_disk_type(hid_t type) {
  const H5T_class_t kind = H5Tget_class(type);
  const char* name = kind == H5T_FLOAT     ? "float"
                     : kind == H5T_INTEGER ? (H5Tget_sign(type) == H5T_SGN_2 ? "int" : "uint")
                     : kind == H5T_STRING  ? "string"
                                           : "non-numeric";
  return std::string(name) + std::to_string(8 * H5Tget_size(type));
}

// ---------------------------------------------------------------------------------------------
// Names

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

void check_state(const std::string& path, const CheckpointState& state) {
  INFLLM_CHECK(state.step >= 0, "checkpoint '", path, "': step ", state.step,
               " is negative; steps count from 0");
  std::vector<std::string> names;
  for (const auto& [name, tensor] : state.tensors) {
    INFLLM_CHECK(valid_tensor_name(name), "checkpoint '", path, "': tensor name '", name,
                 "' is not a valid path; use '/'-separated non-empty parts such as "
                 "\"model/layers.0.wq\"");
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
      INFLLM_CHECK(
          std::find(kReservedKeys.begin(), kReservedKeys.end(), key) == kReservedKeys.end(),
          "checkpoint '", path, "': ", kind, " key '", key,
          "' is reserved (format, format_version, step); rename it (the step goes in "
          "CheckpointState::step)");
      const auto [other, fresh] = seen.emplace(key, kind);
      INFLLM_CHECK(fresh, "checkpoint '", path, "': key '", key, "' is both a ", other->second,
                   " and a ", kind, "; each attribute key holds one value");
    }
  };
  check_keys(state.strings, "string");
  check_keys(state.integers, "integer");
  check_keys(state.numbers, "number");
}

// ---------------------------------------------------------------------------------------------
// Writing

bool write_attribute(hid_t object, const std::string& name, hid_t type, const void* value) {
  H5Handle space(H5Screate(H5S_SCALAR));
  H5Handle attribute(H5Acreate2(object, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  return attribute.valid() && H5Awrite(attribute.get(), type, value) >= 0;
}

// Variable-length UTF-8: h5py reads it back as a Python str.
bool write_string_attribute(hid_t object, const std::string& name, const std::string& value) {
  H5Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const char* text = value.c_str();
  return write_attribute(object, name, type.get(), &text);
}

H5Handle dataspace_for(const Shape& shape) {
  if (shape.empty()) return H5Handle(H5Screate(H5S_SCALAR));
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  return H5Handle(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
}

// One tensor as one contiguous dataset (no compression: weights do not compress, and a
// checkpoint is written often).
bool write_tensor(hid_t file, const std::string& name, const Tensor& tensor, hid_t link_properties,
                  hid_t dataset_properties) {
  const Tensor host = tensor.to(Device::cpu()).contiguous();
  H5Handle space = dataspace_for(host.shape());
  H5Handle dataset(H5Dcreate2(file, name.c_str(), disk_type(host.dtype()), space.get(),
                              link_properties, dataset_properties, H5P_DEFAULT));
  if (!dataset.valid()) return false;
  if (host.dtype() == DType::bf16 && !write_string_attribute(dataset.get(), "dtype", "bf16"))
    return false;
  if (host.numel() == 0) return true;
  return H5Dwrite(dataset.get(), memory_type(host.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                  host.data_ptr()) >= 0;
}

const char* const kFileLockingHint =
    "on NFS or Lustre, where HDF5's file locking fails, set HDF5_USE_FILE_LOCKING=FALSE";

// Writes the whole state into `temp` and closes it; `path` names the checkpoint in errors.
void write_file(const std::string& temp, const std::string& path, const CheckpointState& state) {
  size_t total_bytes = 0;
  for (const auto& [name, tensor] : state.tensors) total_bytes += tensor.nbytes();
  const auto write_failed = [&](const std::string& what) {
    fail_checkpoint(path, "writing ", what, " to '", temp, "' failed (disk full? the tensors need ",
                    total_bytes, " bytes); the previous file at the path is untouched");
  };

  std::lock_guard lock(data::hdf5_mutex());
  QuietHdf5Errors quiet;
  H5Handle file(H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!file.valid())
    fail_checkpoint(path, "cannot create '", temp,
                    "' (does the folder exist and is it writable?); ", kFileLockingHint);
  const hid_t root = file.get();

  bool ok = write_string_attribute(root, "format", kFormat) &&
            write_attribute(root, "format_version", H5T_NATIVE_INT64, &kFormatVersion) &&
            write_attribute(root, "step", H5T_NATIVE_INT64, &state.step);
  if (!ok) write_failed("the format attributes");
  for (const auto& [key, value] : state.strings) {
    if (!write_string_attribute(root, key, value)) write_failed("string '" + key + "'");
  }
  for (const auto& [key, value] : state.integers) {
    if (!write_attribute(root, key, H5T_NATIVE_INT64, &value))
      write_failed("integer '" + key + "'");
  }
  for (const auto& [key, value] : state.numbers) {
    if (!write_attribute(root, key, H5T_NATIVE_DOUBLE, &value))
      write_failed("number '" + key + "'");
  }

  H5Handle link_properties(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(link_properties.get(), 1);  // "model/wte" makes group model
  H5Handle dataset_properties(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(dataset_properties.get(), false);
  for (const auto& [name, tensor] : state.tensors) {
    if (!write_tensor(root, name, tensor, link_properties.get(), dataset_properties.get()))
      write_failed("tensor '" + name + "' (" + tensor.str() + ")");
  }
  if (H5Fflush(root, H5F_SCOPE_LOCAL) < 0) write_failed("the file's metadata");
}

// fsync(2) on a path: a file's data, or a folder's entries (after a rename).
void fsync_path(const std::string& target, int flags, const std::string& path) {
  const int fd = ::open(target.c_str(), flags);
  const int status = fd < 0 ? -1 : ::fsync(fd);
  const int error = errno;
  if (fd >= 0) ::close(fd);
  INFLLM_CHECK(status == 0, "checkpoint '", path, "': fsync of '", target,
               "' failed: ", std::strerror(error), " (disk full or a read-only file system?)");
}

// ---------------------------------------------------------------------------------------------
// Reading

using AttributeValue = std::variant<std::string, int64_t, double>;

std::vector<std::string> attribute_names(hid_t object) {
  std::vector<std::string> names;
  const auto collect = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names);
  return names;
}

std::optional<std::string> read_string(hid_t attribute, hid_t type) {
  if (H5Tis_variable_str(type) > 0) {
    H5Handle memory(H5Tcopy(H5T_C_S1));
    H5Tset_size(memory.get(), H5T_VARIABLE);
    H5Tset_cset(memory.get(), H5Tget_cset(type));
    char* text = nullptr;
    if (H5Aread(attribute, memory.get(), &text) < 0) return std::nullopt;
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  // Fixed-length (numpy bytes): NUL-padded or space-padded to the type's size.
  std::string value(H5Tget_size(type), '\0');
  H5Handle memory(H5Tcopy(type));
  if (H5Aread(attribute, memory.get(), value.data()) < 0) return std::nullopt;
  value.resize(std::min(value.size(), value.find('\0')));
  return value;
}

// One single-valued attribute: an integer, a floating-point number or a string.
AttributeValue read_attribute(hid_t object, const std::string& name, const std::string& where,
                              const std::string& path) {
  H5Handle attribute(H5Aopen(object, name.c_str(), H5P_DEFAULT));
  H5Handle space(attribute.valid() ? H5Aget_space(attribute.get()) : H5I_INVALID_HID);
  H5Handle type(attribute.valid() ? H5Aget_type(attribute.get()) : H5I_INVALID_HID);
  if (!space.valid() || !type.valid())
    fail_checkpoint(path, "cannot read attribute '", name, "' of ", where, "; ", kDamagedHint);
  INFLLM_CHECK(H5Sget_simple_extent_npoints(space.get()) == 1, "checkpoint '", path,
               "': attribute '", name, "' of ", where,
               " holds an array; checkpoint attributes are single values (store arrays as "
               "tensors)");
  bool ok = false;
  AttributeValue value;
  switch (H5Tget_class(type.get())) {
    case H5T_INTEGER: {
      int64_t number = 0;
      ok = H5Aread(attribute.get(), H5T_NATIVE_INT64, &number) >= 0;
      value = number;
      break;
    }
    case H5T_FLOAT: {
      double number = 0;
      ok = H5Aread(attribute.get(), H5T_NATIVE_DOUBLE, &number) >= 0;
      value = number;
      break;
    }
    case H5T_STRING: {
      std::optional<std::string> text = read_string(attribute.get(), type.get());
      ok = text.has_value();
      if (ok) value = std::move(*text);
      break;
    }
    default:
      fail_checkpoint(path, "attribute '", name, "' of ", where, " has HDF5 type ",
                      describe_disk_type(type.get()),
                      "; checkpoint attributes are integers, floating-point numbers or strings");
  }
  if (!ok)
    fail_checkpoint(path, "reading attribute '", name, "' of ", where, " failed; ", kDamagedHint);
  return value;
}

// The names of all datasets under `group` (recursively), in name order.
void collect_datasets(hid_t group, const std::string& group_path, const std::string& path,
                      std::vector<std::string>& names) {
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0)
    fail_checkpoint(path, "cannot list group '/", group_path, "'; ", kDamagedHint);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t length =
        H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (length < 0) fail_checkpoint(path, "cannot list group '/", group_path, "'; ", kDamagedHint);
    std::string name(size_t(length), '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), size_t(length) + 1,
                       H5P_DEFAULT);
    const std::string full = group_path.empty() ? name : group_path + "/" + name;
    H5Handle object(H5Oopen(group, name.c_str(), H5P_DEFAULT));
    if (!object.valid()) fail_checkpoint(path, "cannot open '/", full, "'; ", kDamagedHint);
    const H5I_type_t kind = H5Iget_type(object.get());
    if (kind == H5I_GROUP) collect_datasets(object.get(), full, path, names);
    if (kind == H5I_DATASET) names.push_back(full);
  }
}

Tensor read_tensor(hid_t file, const std::string& name, Device device, const std::string& path) {
  const std::string where = "tensor '" + name + "'";
  H5Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
  H5Handle space(dataset.valid() ? H5Dget_space(dataset.get()) : H5I_INVALID_HID);
  H5Handle type(dataset.valid() ? H5Dget_type(dataset.get()) : H5I_INVALID_HID);
  if (!space.valid() || !type.valid())
    fail_checkpoint(path, "cannot open ", where, "; ", kDamagedHint);

  std::optional<DType> dtype = dtype_of_disk_type(type.get());
  INFLLM_CHECK(dtype.has_value(), "checkpoint '", path, "': ", where, " has HDF5 type ",
               describe_disk_type(type.get()),
               "; tensors are float32, float64, int32, int64, uint16 or uint32 (bf16 as uint16 "
               "with attribute dtype=\"bf16\"); convert it to one of them");
  if (H5Aexists(dataset.get(), "dtype") > 0) {
    const AttributeValue tag = read_attribute(dataset.get(), "dtype", where, path);
    const std::string* tag_name = std::get_if<std::string>(&tag);
    const std::optional<DType> tagged = tag_name ? parse_dtype(*tag_name) : std::nullopt;
    const bool matches =
        tagged && (*tagged == *dtype || (*tagged == DType::bf16 && *dtype == DType::u16));
    INFLLM_CHECK(matches, "checkpoint '", path, "': ", where,
                 " has attribute dtype=", tag_name ? *tag_name : std::string("(not a string)"),
                 " but HDF5 type ", describe_disk_type(type.get()),
                 "; dtype must name the stored type (bf16 is stored as uint16)");
    dtype = *tagged;
  }

  const int rank = H5Sget_simple_extent_ndims(space.get());
  INFLLM_CHECK(rank >= 0 && H5Sget_simple_extent_type(space.get()) != H5S_NULL, "checkpoint '",
               path, "': ", where, " has no dataspace (an HDF5 null dataset); store a tensor");
  std::vector<hsize_t> dims(size_t(rank), 0);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  const Shape shape(dims.begin(), dims.end());

  Tensor host = Tensor::empty(shape, *dtype, Device::cpu(), /*pinned=*/device.is_cuda());
  if (host.numel() > 0 && H5Dread(dataset.get(), memory_type(*dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                  host.data_ptr()) < 0)
    fail_checkpoint(path, "reading ", where, " (", shape_str(shape), ") failed; ", kDamagedHint);
  return host.to(device);
}

// True when `path` carries the HDF5 signature at one of the offsets a file may start at.
bool has_hdf5_signature(const std::string& path) {
  static constexpr char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  std::ifstream in(path, std::ios::binary);
  for (std::streamoff offset = 0; in; offset = offset == 0 ? 512 : offset * 2) {
    char head[8] = {};
    in.seekg(offset);
    if (!in.read(head, 8)) return false;
    if (std::memcmp(head, kSignature, 8) == 0) return true;
  }
  return false;
}

H5Handle open_checkpoint_file(const std::string& path) {
  if (!fs::exists(path)) {
    const fs::path folder = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : ".";
    const std::optional<std::string> newest = latest_checkpoint(folder.string());
    if (newest)
      fail_checkpoint(path, "file not found; the newest checkpoint in that folder is ", *newest,
                      " (or name the folder's 'latest')");
    fail_checkpoint(path,
                    "file not found; a run writes <out_dir>/checkpoints/step_XXXXXXXX.h5, and "
                    "<out_dir>/checkpoints/latest names the newest");
  }
  INFLLM_CHECK(!fs::is_directory(path), "checkpoint '", path,
               "': is a folder; name a step_XXXXXXXX.h5 file in it, or '", path, "/latest'");
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (file.valid()) return file;
  if (!has_hdf5_signature(path))
    fail_checkpoint(path, "is not an HDF5 file (", fs::file_size(path),
                    " bytes without the HDF5 signature: another kind of file, or truncated); "
                    "checkpoints are the step_*.h5 files under <out_dir>/checkpoints/");
  fail_checkpoint(path, "HDF5 cannot open it; ", kDamagedHint,
                  " (if the file is whole: ", kFileLockingHint, ")");
}

// The root attributes: checks format/format_version, takes step, sorts the rest into `state`.
void read_root_attributes(hid_t root, const std::string& path, CheckpointState& state) {
  const std::vector<std::string> names = attribute_names(root);
  const auto has = [&](const char* key) {
    return std::find(names.begin(), names.end(), key) != names.end();
  };
  const std::string not_a_checkpoint =
      "this HDF5 file is not an infllm checkpoint (a token file or another program's file?); "
      "checkpoints are the step_*.h5 files under <out_dir>/checkpoints/";
  INFLLM_CHECK(has("format"), "checkpoint '", path, "': missing attribute 'format'; ",
               not_a_checkpoint);
  const AttributeValue format = read_attribute(root, "format", "the root group", path);
  INFLLM_CHECK(format == AttributeValue(std::string(kFormat)), "checkpoint '", path,
               "': attribute 'format' is not \"", kFormat, "\"; ", not_a_checkpoint);
  for (const char* key : {"format_version", "step"}) {
    INFLLM_CHECK(has(key), "checkpoint '", path, "': missing required attribute '", key, "'; ",
                 kDamagedHint);
  }
  const AttributeValue version = read_attribute(root, "format_version", "the root group", path);
  const AttributeValue step = read_attribute(root, "step", "the root group", path);
  INFLLM_CHECK(std::holds_alternative<int64_t>(version) && std::get<int64_t>(version) >= 1,
               "checkpoint '", path, "': attribute 'format_version' is not a positive integer; ",
               kDamagedHint);
  INFLLM_CHECK(std::get<int64_t>(version) <= kFormatVersion, "checkpoint '", path,
               "': format_version ", std::get<int64_t>(version),
               " was written by a newer infllm (this one reads up to ", kFormatVersion,
               "); update infllm");
  INFLLM_CHECK(std::holds_alternative<int64_t>(step) && std::get<int64_t>(step) >= 0,
               "checkpoint '", path, "': attribute 'step' is not a non-negative integer; ",
               kDamagedHint);
  state.step = std::get<int64_t>(step);

  for (const std::string& name : names) {
    if (std::find(kReservedKeys.begin(), kReservedKeys.end(), name) != kReservedKeys.end())
      continue;
    AttributeValue value = read_attribute(root, name, "the root group", path);
    if (auto* text = std::get_if<std::string>(&value)) state.strings[name] = std::move(*text);
    if (auto* integer = std::get_if<int64_t>(&value)) state.integers[name] = *integer;
    if (auto* number = std::get_if<double>(&value)) state.numbers[name] = *number;
  }
}

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

// ---------------------------------------------------------------------------------------------
// CheckpointState lookups

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

// ---------------------------------------------------------------------------------------------
// Save and load

void save_checkpoint(const std::string& path, const CheckpointState& state) {
  check_state(path, state);
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code error;
  fs::create_directories(folder, error);
  INFLLM_CHECK(!error, "checkpoint '", path, "': cannot create the folder '", folder.string(),
               "': ", error.message());

  const std::string temp = path + ".tmp-" + std::to_string(::getpid());
  try {
    write_file(temp, path, state);
    fsync_path(temp, O_RDONLY, path);
    if (std::rename(temp.c_str(), path.c_str()) != 0) {
      fail_checkpoint(path, "renaming '", temp, "' over it failed: ", std::strerror(errno),
                      " (is the path a folder, or on another file system?)");
    }
  } catch (...) {
    std::remove(temp.c_str());
    throw;
  }
  fsync_path(folder.string(), O_RDONLY | O_DIRECTORY, path);  // makes the rename durable
}

CheckpointState load_checkpoint(const std::string& path_or_latest, Device device,
                                std::string_view prefix) {
  require_device(device, "load_checkpoint");
  const std::string path = fs::path(path_or_latest).filename() == "latest"
                               ? resolve_checkpoint_path(path_or_latest)
                               : path_or_latest;
  CheckpointState state;
  state.source = path;

  std::lock_guard lock(data::hdf5_mutex());
  QuietHdf5Errors quiet;
  H5Handle file = open_checkpoint_file(path);
  read_root_attributes(file.get(), path, state);

  std::vector<std::string> names;
  collect_datasets(file.get(), "", path, names);
  for (const std::string& name : names) {
    if (name.starts_with(prefix))
      state.tensors.emplace_back(name, read_tensor(file.get(), name, device, path));
  }
  INFLLM_CHECK(prefix.empty() || !state.tensors.empty(), "checkpoint '", path,
               "': no tensor name starts with '", prefix, "' (it holds ", names.size(), " tensors",
               names.empty() ? std::string() : ", e.g. '" + names.front() + "'", "); ",
               kOtherRunHint);
  return state;
}

// ---------------------------------------------------------------------------------------------
// The checkpoints folder of a run

std::string checkpoint_dir(const std::string& out_dir) {
  return (fs::path(out_dir) / "checkpoints").string();
}

std::string checkpoint_path(const std::string& out_dir, int64_t step) {
  INFLLM_CHECK(step >= 0, "checkpoint_path: step ", step, " is negative; steps count from 0");
  char name[40];
  std::snprintf(name, sizeof(name), "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(checkpoint_dir(out_dir)) / name).string();
}

std::optional<int64_t> checkpoint_step(std::string_view filename) {
  if (!filename.starts_with("step_") || !filename.ends_with(".h5")) return std::nullopt;
  const std::string_view digits = filename.substr(5, filename.size() - 8);
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  int64_t step = -1;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return step;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(dir, error)) {
    const std::optional<int64_t> step = checkpoint_step(item.path().filename().string());
    if (step && item.is_regular_file()) found.emplace_back(*step, item.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [step, path] : found) paths.push_back(std::move(path));
  return paths;
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  std::vector<std::string> paths = list_checkpoints(dir);
  if (paths.empty()) return std::nullopt;
  return paths.back();
}

void prune_checkpoints(const std::string& dir, int keep_last) {
  INFLLM_CHECK(keep_last >= 1, "prune_checkpoints: keep_last is ", keep_last,
               "; keep at least 1 checkpoint (set checkpoint.keep_last >= 1)");
  const std::vector<std::string> paths = list_checkpoints(dir);
  for (size_t i = 0; i + size_t(keep_last) < paths.size(); ++i) {
    std::error_code error;
    fs::remove(paths[i], error);
    INFLLM_CHECK(!error, "prune_checkpoints: cannot delete '", paths[i], "': ", error.message());
  }
}

}  // namespace infllm::train
