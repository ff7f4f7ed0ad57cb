// RAII for HDF5 identifiers, and the one lock that serializes this program's HDF5 calls.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <utility>

namespace infllm::data {

// Owns one HDF5 identifier (file, dataset, dataspace, type, attribute, property list) and
// releases it with H5Idec_ref, which closes any kind of object.
class H5Handle {
 public:
  H5Handle() = default;
  explicit H5Handle(hid_t id) : id_(id) {}
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  H5Handle(H5Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0) H5Idec_ref(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// HDF5 built without --enable-threadsafe must never be entered by two threads at once, even
// for different files. Every HDF5 call in this program (token files, checkpoints) holds this
// lock, so the loader's prefetch thread can read while the trainer writes a checkpoint.
// The first call on a thread also turns off HDF5's automatic error printing there: failures
// become one infllm::Error naming the file, never a page of library diagnostics.
std::recursive_mutex& hdf5_mutex();

}  // namespace infllm::data
