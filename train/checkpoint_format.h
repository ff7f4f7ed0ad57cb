// Internal to train/checkpoint*.cpp: the on-disk format's fixed names, the checks of a state
// before it is written, and the checksum table that lets a load name the damaged key or tensor.
#pragma once

#include <hdf5.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "data/hdf5_handle.h"
#include "train/checkpoint.h"

namespace infllm::train::checkpoint_format {

inline constexpr const char* kFormat = "infllm-checkpoint";
// 1: no checksums (loaded unverified, with a warning). 2: checksums, HDF5 1.8 object headers.
inline constexpr int64_t kFormatVersion = 2;
inline constexpr int64_t kFirstChecksummedVersion = 2;
// Root attribute names a state may not use.
inline constexpr std::array<std::string_view, 5> kReservedKeys = {"format", "format_version",
                                                                  "step", "checksum", "checksums"};
inline constexpr const char* kChecksumKey = "checksum";        // on the root and on every dataset
inline constexpr const char* kChecksumTableKey = "checksums";  // on the root

inline constexpr const char* kDamagedHint =
    "the file is damaged or truncated (a flipped bit on disk, an interrupted copy, a full "
    "disk?); an earlier step_*.h5 checkpoint beside it may be whole (`infllm train RECIPE "
    "--resume-last-good` takes the newest that verifies)";

using AttributeValue = std::variant<std::string, int64_t, double>;

template <class... Parts>
[[noreturn]] void fail_checkpoint(const std::string& path, const Parts&... parts) {
  fail("checkpoint '", path, "': ", parts...);
}

template <class... Parts>
[[noreturn]] void fail_damaged(const std::string& path, const Parts&... parts) {
  std::ostringstream out;
  out << "checkpoint '" << path << "': ";
  (out << ... << parts);
  throw CheckpointDamaged(out.str());
}

// Names, keys and attribute kinds of a state about to be written; throws naming the problem.
void check_state(const std::string& path, const CheckpointState& state);

// XXH64 of a tensor's name, dtype name, shape and `bytes` (its little-endian elements).
std::string tensor_checksum(const std::string& name, DType dtype, const Shape& shape,
                            const void* bytes, size_t size);
// XXH64 of one root attribute: its kind, key and value.
std::string attribute_checksum(const std::string& key, const AttributeValue& value);

// The root attribute "checksums": one line per attribute ("attribute\t<key>\t<checksum>") and
// per tensor ("tensor\t<name>\t<checksum>"), sorted; the root "checksum" is the XXH64 of its
// text, so a load first trusts the table and then names each key or tensor that disagrees.
struct ChecksumTable {
  std::map<std::string, std::string> attributes;
  std::map<std::string, std::string> tensors;
  std::string text() const;
  // nullopt when `text` is not a table of this form.
  static std::optional<ChecksumTable> parse(std::string_view text);
};

// Checks the root attributes of a checksummed file (`attributes` excludes checksum and
// checksums) and its dataset names against `table`; throws CheckpointDamaged naming the first
// key or tensor that differs.
void verify_metadata(const std::string& path, const ChecksumTable& table,
                     const std::map<std::string, AttributeValue>& attributes,
                     const std::vector<std::string>& tensor_names);

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

// Element types: little-endian on disk; bf16 travels as its 16-bit pattern (u16 on disk).
hid_t disk_type(DType dtype);
hid_t memory_type(DType dtype);
// The DType whose values a dataset of HDF5 type `type` holds exactly (u16 also carries bf16).
std::optional<DType> dtype_of_disk_type(hid_t type);
std::optional<DType> parse_dtype(std::string_view name);
// "float32", "uint16", "string", ... for messages.
std::string describe_disk_type(hid_t type);

// One scalar attribute; false when HDF5 failed.
bool write_attribute(hid_t object, const std::string& name, hid_t type, const void* value);
// Variable-length UTF-8: h5py reads it back as a Python str.
bool write_string_attribute(hid_t object, const std::string& name, const std::string& value);
data::H5Handle dataspace_for(const Shape& shape);

std::vector<std::string> attribute_names(hid_t object);
// One single-valued attribute: an integer, a floating-point number or a string. `where` names
// the object in messages ("the root group", "tensor 'x'").
AttributeValue read_attribute(hid_t object, const std::string& name, const std::string& where,
                              const std::string& path);
// The names of all datasets under `group` (recursively), in name order.
void collect_datasets(hid_t group, const std::string& group_path, const std::string& path,
                      std::vector<std::string>& names);
// True when `path` carries the HDF5 signature at one of the offsets a file may start at.
bool has_hdf5_signature(const std::string& path);

}  // namespace infllm::train::checkpoint_format
