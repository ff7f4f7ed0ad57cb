// Saving, loading and verifying one checkpoint file (train/checkpoint.h). The checksum table
// and the state checks are in checkpoint_state.cpp, the HDF5 helpers in checkpoint_hdf5.cpp,
// the checkpoints folder in checkpoint_folder.cpp.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>
#include <variant>

#include "data/hdf5_handle.h"
#include "train/checkpoint_format.h"
#include "train/checksum.h"
#include "train/recipe.h"

namespace infllm::train {

namespace {

namespace fs = std::filesystem;
using data::H5Handle;
using namespace checkpoint_format;

// ---------------------------------------------------------------------------------------------
// Writing

// One tensor as one contiguous dataset (no compression: weights do not compress, and a
// checkpoint is written often) with its checksum attribute. Returns the checksum, or nullopt
// when HDF5 failed.
std::optional<std::string> write_tensor(hid_t file, const std::string& name, const Tensor& tensor,
                                        hid_t link_properties, hid_t dataset_properties) {
  const Tensor host = tensor.to(Device::cpu()).contiguous();
  const std::string checksum =
      tensor_checksum(name, host.dtype(), host.shape(), host.data_ptr(), host.nbytes());
  H5Handle space = dataspace_for(host.shape());
  H5Handle dataset(H5Dcreate2(file, name.c_str(), disk_type(host.dtype()), space.get(),
                              link_properties, dataset_properties, H5P_DEFAULT));
  if (!dataset.valid()) return std::nullopt;
  if (host.dtype() == DType::bf16 && !write_string_attribute(dataset.get(), "dtype", "bf16"))
    return std::nullopt;
  if (!write_string_attribute(dataset.get(), kChecksumKey, checksum)) return std::nullopt;
  if (host.numel() > 0 && H5Dwrite(dataset.get(), memory_type(host.dtype()), H5S_ALL, H5S_ALL,
                                   H5P_DEFAULT, host.data_ptr()) < 0)
    return std::nullopt;
  return checksum;
}

const char* const kFileLockingHint =
    "on NFS or Lustre, where HDF5's file locking fails, set HDF5_USE_FILE_LOCKING=FALSE";

// The temp file being written. The success path closes it explicitly and checks the close (the
// last metadata reaches the disk there); on an error the destructor closes it.
class WritingFile {
 public:
  explicit WritingFile(hid_t id) : id_(id) {}
  ~WritingFile() {
    if (id_ >= 0) H5Fclose(id_);
  }
  WritingFile(const WritingFile&) = delete;
  WritingFile& operator=(const WritingFile&) = delete;
  hid_t get() const { return id_; }
  bool close() { return H5Fclose(std::exchange(id_, H5I_INVALID_HID)) >= 0; }

 private:
  hid_t id_;
};

// Writes the whole state into `temp` and closes it; `path` names the checkpoint in errors.
void write_file(const std::string& temp, const std::string& path, const CheckpointState& state) {
  size_t total_bytes = 0;
  for (const auto& [name, tensor] : state.tensors) total_bytes += tensor.nbytes();
  const auto write_failed = [&](const std::string& what) {
    fail_checkpoint(path, "writing ", what, " to '", temp, "' failed (disk full, a file-size ",
                    "limit or an I/O error? the tensors need ", total_bytes,
                    " bytes); the earlier checkpoints are untouched");
  };

  std::lock_guard lock(data::hdf5_mutex());
  QuietHdf5Errors quiet;
  // HDF5 1.8 object headers and superblock carry their own checksums: damaged file metadata is
  // found by HDF5 itself, before ours are consulted.
  H5Handle access(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_libver_bounds(access.get(), H5F_LIBVER_V18, H5F_LIBVER_V18);
  // The root's attributes stay in its (checksummed) object header instead of moving to a
  // fractal heap, whose blocks HDF5 does not checksum.
  H5Handle creation(H5Pcreate(H5P_FILE_CREATE));
  H5Pset_attr_phase_change(creation.get(), 65535, 0);
  WritingFile file(H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, creation.get(), access.get()));
  if (file.get() < 0)
    fail_checkpoint(path, "cannot create '", temp,
                    "' (is the folder writable, and is there space?); ", kFileLockingHint);
  const hid_t root = file.get();

  ChecksumTable table;
  const auto write_root = [&](const std::string& key, const AttributeValue& value) {
    table.attributes[key] = attribute_checksum(key, value);
    bool ok = false;
    if (const auto* text = std::get_if<std::string>(&value))
      ok = write_string_attribute(root, key, *text);
    if (const auto* integer = std::get_if<int64_t>(&value))
      ok = write_attribute(root, key, H5T_NATIVE_INT64, integer);
    if (const auto* number = std::get_if<double>(&value))
      ok = write_attribute(root, key, H5T_NATIVE_DOUBLE, number);
    if (!ok) write_failed("attribute '" + key + "'");
  };
  write_root("format", std::string(kFormat));
  write_root("format_version", kFormatVersion);
  write_root("step", state.step);
  for (const auto& [key, value] : state.strings) write_root(key, value);
  for (const auto& [key, value] : state.integers) write_root(key, value);
  for (const auto& [key, value] : state.numbers) write_root(key, value);

  H5Handle link_properties(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(link_properties.get(), 1);  // "optim/x" makes group optim
  H5Handle dataset_properties(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(dataset_properties.get(), false);
  for (const auto& [name, tensor] : state.tensors) {
    std::optional<std::string> checksum =
        write_tensor(root, name, tensor, link_properties.get(), dataset_properties.get());
    if (!checksum) write_failed("tensor '" + name + "' (" + tensor.str() + ")");
    table.tensors[name] = std::move(*checksum);
  }
  const std::string table_text = table.text();
  if (!write_string_attribute(root, kChecksumTableKey, table_text) ||
      !write_string_attribute(root, kChecksumKey,
                              checksum_text(xxh64(table_text.data(), table_text.size()))))
    write_failed("the checksums");
  if (H5Fflush(root, H5F_SCOPE_LOCAL) < 0 || !file.close()) write_failed("the file's metadata");
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

// Reads the dataset `name`. `expected` is its checksum from the file's verified table (nullptr:
// an unchecksummed format_version 1 file). With keep = false the bytes are checked and dropped.
Tensor read_tensor(hid_t file, const std::string& name, Device device, const std::string& path,
                   const std::string* expected, bool keep) {
  const std::string where = "tensor '" + name + "'";
  H5Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
  H5Handle space(dataset.valid() ? H5Dget_space(dataset.get()) : H5I_INVALID_HID);
  H5Handle type(dataset.valid() ? H5Dget_type(dataset.get()) : H5I_INVALID_HID);
  if (!space.valid() || !type.valid())
    fail_damaged(path, "cannot open ", where, "; ", kDamagedHint);

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

  // A damaged shape must not become a huge allocation: unfiltered layouts store exactly the
  // tensor's bytes (or nothing yet, for a tensor never written).
  H5Handle creation(H5Dget_create_plist(dataset.get()));
  const H5D_layout_t layout = creation.valid() ? H5Pget_layout(creation.get()) : H5D_LAYOUT_ERROR;
  const uint64_t stored = H5Dget_storage_size(dataset.get());
  const uint64_t needed = uint64_t(shape_numel(shape)) * dtype_size(*dtype);
  if ((layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) && stored != needed &&
      (stored != 0 || expected))
    fail_damaged(path, where, " claims shape ", shape_str(shape), " (", needed,
                 " bytes) but stores ", stored, " bytes; ", kDamagedHint);

  if (expected) {
    if (H5Aexists(dataset.get(), kChecksumKey) <= 0)
      fail_damaged(path, where, " has no checksum attribute; ", kDamagedHint);
    const AttributeValue own = read_attribute(dataset.get(), kChecksumKey, where, path);
    if (own != AttributeValue(*expected))
      fail_damaged(path, where, "'s checksum attribute differs from the file's checksum table (",
                   *expected, "); ", kDamagedHint);
  }

  Tensor host = Tensor::empty(shape, *dtype, Device::cpu(), /*pinned=*/keep && device.is_cuda());
  if (host.numel() > 0 && H5Dread(dataset.get(), memory_type(*dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                  host.data_ptr()) < 0)
    fail_damaged(path, "reading ", where, " (", shape_str(shape), ") failed; ", kDamagedHint);
  if (expected) {
    const std::string computed =
        tensor_checksum(name, *dtype, shape, host.data_ptr(), host.nbytes());
    if (computed != *expected)
      fail_damaged(path, where, " ", shape_str(shape), " ", dtype_name(*dtype),
                   " does not match its checksum (stored ", *expected, ", computed ", computed,
                   "); ", kDamagedHint);
  }
  return keep ? host.to(device) : Tensor();
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
    fail_damaged(path, "is not an HDF5 file (", fs::file_size(path),
                 " bytes without the HDF5 signature: another kind of file, or truncated); "
                 "checkpoints are the step_*.h5 files under <out_dir>/checkpoints/");
  fail_damaged(path, "HDF5 cannot open it; ", kDamagedHint,
               " (if the file is whole: ", kFileLockingHint, ")");
}

// The root attributes, checked: format and format_version, the checksum table (from version
// 2 on) against every attribute and `tensor_names`. Fills step and the values of `state`;
// returns the verified table, or nullopt for an unchecksummed version 1 file.
std::optional<ChecksumTable> read_root_attributes(hid_t root, const std::string& path,
                                                  const std::vector<std::string>& tensor_names,
                                                  CheckpointState& state) {
  std::map<std::string, AttributeValue> values;
  for (const std::string& name : attribute_names(root))
    values[name] = read_attribute(root, name, "the root group", path);
  const std::string not_a_checkpoint =
      "this HDF5 file is not an infllm checkpoint (a token file or another program's file?); "
      "checkpoints are the step_*.h5 files under <out_dir>/checkpoints/";
  const auto format = values.find("format");
  if (format == values.end() || format->second != AttributeValue(std::string(kFormat))) {
    // A checkpoint whose 'format' was damaged still has its other attributes.
    const bool damaged = values.contains(kChecksumTableKey) || values.contains("format_version");
    const std::string problem = format != values.end()
                                    ? "attribute 'format' is not \"" + std::string(kFormat) + "\""
                                    : std::string("missing attribute 'format'");
    if (damaged) fail_damaged(path, problem, "; ", kDamagedHint);
    fail_checkpoint(path, problem, "; ", not_a_checkpoint);
  }
  for (const char* key : {"format_version", "step"}) {
    if (!values.contains(key))
      fail_damaged(path, "missing required attribute '", key, "'; ", kDamagedHint);
  }
  const AttributeValue& version = values["format_version"];
  if (!std::holds_alternative<int64_t>(version) || std::get<int64_t>(version) < 1)
    fail_damaged(path, "attribute 'format_version' is not a positive integer; ", kDamagedHint);
  INFLLM_CHECK(std::get<int64_t>(version) <= kFormatVersion, "checkpoint '", path,
               "': format_version ", std::get<int64_t>(version),
               " was written by a newer infllm (this one reads up to ", kFormatVersion,
               "); update infllm");

  std::optional<ChecksumTable> table;
  if (std::get<int64_t>(version) >= kFirstChecksummedVersion) {
    for (const char* key : {kChecksumKey, kChecksumTableKey}) {
      if (!values.contains(key) || !std::holds_alternative<std::string>(values[key]))
        fail_damaged(path, "the root attribute '", key, "' is missing or not a string; ",
                     kDamagedHint);
    }
    const std::string& text = std::get<std::string>(values[kChecksumTableKey]);
    const std::string sum = checksum_text(xxh64(text.data(), text.size()));
    table = ChecksumTable::parse(text);
    if (!table || sum != std::get<std::string>(values[kChecksumKey]))
      fail_damaged(path, "the checksum table (root attribute 'checksums') does not match its ",
                   "checksum; ", kDamagedHint);
    values.erase(kChecksumKey);
    values.erase(kChecksumTableKey);
    verify_metadata(path, *table, values, tensor_names);
  } else {
    std::fprintf(stderr,
                 "infllm: warning: checkpoint '%s' has format_version %lld (written before "
                 "checkpoints carried checksums): loaded without verification\n",
                 path.c_str(), static_cast<long long>(std::get<int64_t>(version)));
  }

  const AttributeValue& step = values["step"];
  if (!std::holds_alternative<int64_t>(step) || std::get<int64_t>(step) < 0)
    fail_damaged(path, "attribute 'step' is not a non-negative integer; ", kDamagedHint);
  state.step = std::get<int64_t>(step);
  for (auto& [name, value] : values) {
    if (std::find(kReservedKeys.begin(), kReservedKeys.end(), name) != kReservedKeys.end())
      continue;
    if (auto* text = std::get_if<std::string>(&value)) state.strings[name] = std::move(*text);
    if (auto* integer = std::get_if<int64_t>(&value)) state.integers[name] = *integer;
    if (auto* number = std::get_if<double>(&value)) state.numbers[name] = *number;
  }
  return table;
}

// Opens, verifies the metadata, and reads (keep) or only verifies (!keep) the tensors whose
// name starts with `prefix`.
CheckpointState read_checkpoint(const std::string& path, Device device, std::string_view prefix,
                                bool keep) {
  CheckpointState state;
  state.source = path;
  std::lock_guard lock(data::hdf5_mutex());
  QuietHdf5Errors quiet;
  H5Handle file = open_checkpoint_file(path);
  std::vector<std::string> names;
  collect_datasets(file.get(), "", path, names);
  const std::optional<ChecksumTable> table = read_root_attributes(file.get(), path, names, state);
  for (const std::string& name : names) {
    if (!name.starts_with(prefix)) continue;
    const std::string* expected = table ? &table->tensors.at(name) : nullptr;
    Tensor tensor = read_tensor(file.get(), name, device, path, expected, keep);
    if (keep) state.tensors.emplace_back(name, std::move(tensor));
  }
  const bool matched = std::any_of(names.begin(), names.end(),
                                   [&](const std::string& n) { return n.starts_with(prefix); });
  INFLLM_CHECK(prefix.empty() || matched, "checkpoint '", path, "': no tensor name starts with '",
               prefix, "' (it holds ", names.size(), " tensors",
               names.empty() ? std::string() : ", e.g. '" + names.front() + "'",
               "); was it written by a different model or optimizer configuration?");
  return state;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Save, load and verify

void save_checkpoint(const std::string& path, const CheckpointState& state) {
  check_state(path, state);
  require_finite(state, path);
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
  return read_checkpoint(path, device, prefix, /*keep=*/true);
}

CheckpointState load_checkpoint_attributes(const std::string& path) {
  CheckpointState state;
  state.source = path;
  std::lock_guard lock(data::hdf5_mutex());
  QuietHdf5Errors quiet;
  H5Handle file = open_checkpoint_file(path);
  std::vector<std::string> names;  // the checksum table must list exactly these
  collect_datasets(file.get(), "", path, names);
  read_root_attributes(file.get(), path, names, state);
  return state;
}

std::optional<std::string> verify_checkpoint(const std::string& path) {
  try {
    read_checkpoint(path, Device::cpu(), {}, /*keep=*/false);
    return std::nullopt;
  } catch (const std::exception& error) {  // bad_alloc included: a file too damaged to size
    return std::string(error.what());
  }
}

}  // namespace infllm::train
