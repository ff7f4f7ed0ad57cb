// The HDF5 side of checkpoint files shared by saving and loading: element types, attributes,
// dataset listing (declared in train/checkpoint_format.h).
#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>

#include "train/checkpoint_format.h"

namespace infllm::train::checkpoint_format {

using data::H5Handle;

namespace {

constexpr std::array<DType, 7> kAllDTypes = {DType::f32, DType::bf16, DType::f64, DType::i32,
                                             DType::i64, DType::u16,  DType::u32};

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

}  // namespace

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
// Attributes and names

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

std::vector<std::string> attribute_names(hid_t object) {
  std::vector<std::string> names;
  const auto collect = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names);
  return names;
}

// One single-valued attribute: an integer, a floating-point number or a string.
AttributeValue read_attribute(hid_t object, const std::string& name, const std::string& where,
                              const std::string& path) {
  H5Handle attribute(H5Aopen(object, name.c_str(), H5P_DEFAULT));
  H5Handle space(attribute.valid() ? H5Aget_space(attribute.get()) : H5I_INVALID_HID);
  H5Handle type(attribute.valid() ? H5Aget_type(attribute.get()) : H5I_INVALID_HID);
  if (!space.valid() || !type.valid())
    fail_damaged(path, "cannot read attribute '", name, "' of ", where, "; ", kDamagedHint);
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
    fail_damaged(path, "reading attribute '", name, "' of ", where, " failed; ", kDamagedHint);
  return value;
}

// The names of all datasets under `group` (recursively), in name order.
void collect_datasets(hid_t group, const std::string& group_path, const std::string& path,
                      std::vector<std::string>& names) {
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0)
    fail_damaged(path, "cannot list group '/", group_path, "'; ", kDamagedHint);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t length =
        H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (length < 0) fail_damaged(path, "cannot list group '/", group_path, "'; ", kDamagedHint);
    std::string name(size_t(length), '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), size_t(length) + 1,
                       H5P_DEFAULT);
    const std::string full = group_path.empty() ? name : group_path + "/" + name;
    H5Handle object(H5Oopen(group, name.c_str(), H5P_DEFAULT));
    if (!object.valid()) fail_damaged(path, "cannot open '/", full, "'; ", kDamagedHint);
    const H5I_type_t kind = H5Iget_type(object.get());
    if (kind == H5I_GROUP) collect_datasets(object.get(), full, path, names);
    if (kind == H5I_DATASET) names.push_back(full);
  }
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

}  // namespace infllm::train::checkpoint_format
