#include "data/hdf5_handle.h"

namespace infllm::data {

std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

}  // namespace infllm::data
