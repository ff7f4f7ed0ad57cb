#include "data/hdf5_handle.h"

namespace infllm::data {

std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  // HDF5 1.10 leaves a file whose close failed (disk full, file-size limit) half-closed in its
  // ID table, and its exit hook (H5_term_library) then segfaults closing it. Every file here is
  // closed explicitly (H5Handle), so the hook has nothing to do: turn it off before the
  // library's first use (any HDF5 call initializes it).
  static const bool no_exit_hook = H5dont_atexit() >= 0;
  (void)no_exit_hook;
  // HDF5 prints its whole error stack to stderr on any failure unless told not to, per thread
  // in a thread-safe build. Every failing call here is checked and turned into one
  // infllm::Error naming the file and the fix, so the printing is off for every thread that
  // takes this lock before its first HDF5 call.
  thread_local const bool quiet = [] {
    std::lock_guard lock(mutex);
    return H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  }();
  (void)quiet;
  return mutex;
}

}  // namespace infllm::data
