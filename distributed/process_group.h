// One NCCL communicator over all ranks of a run, with its own CUDA stream and a watchdog:
// a collective that does not finish within the timeout (a rank died or hangs) aborts the
// communicator, and the next call on any thread throws an infllm::Error naming the rank, the
// operation and the timeout. The caller never hangs on a dead peer.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "distributed/launch_env.h"
#include "distributed/rendezvous.h"

namespace infllm::distributed {

// Element types a collective moves; independent of core/Tensor's DType on purpose.
enum class CommDType { f32, bf16, i32, i64, f64 };
size_t comm_dtype_bytes(CommDType dtype);
const char* comm_dtype_name(CommDType dtype);

enum class ReduceOp { sum, avg };

struct ProcessGroupOptions {
  RendezvousOptions rendezvous;
  // Longest a collective (or the communicator's setup) may stay outstanding before the
  // watchdog aborts the communicator. Counted from when the collective reached the head of
  // the communication stream, so queued collectives do not eat each other's time.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds watchdog_period{std::chrono::milliseconds(50)};
  int device = -1;  // CUDA device of this rank; -1 = LaunchEnv::local_rank (or the only
                    // visible GPU when the launcher bound one per rank)
};

}  // namespace infllm::distributed

#if INFLLM_WITH_CUDA

#include <cuda_runtime.h>
#include <nccl.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace infllm::distributed {

class ProcessGroup {
 public:
  // Collective over all ranks: sets this thread's CUDA device, exchanges the NCCL unique id
  // through the rendezvous and builds a non-blocking communicator. Sets NCCL_NVLS_ENABLE=0
  // unless the environment already chose (NVLink multicast can wedge shared hosts).
  ProcessGroup(const LaunchEnv& env, const ProcessGroupOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int device() const { return device_; }

  // All collectives are enqueued on stream() and return at once; pointers are device memory
  // on device(). Counts are elements. In place is allowed where NCCL allows it.
  void all_reduce(void* data, size_t count, CommDType dtype, ReduceOp op);
  void broadcast(void* data, size_t count, CommDType dtype, int root);
  // recv holds world_size() blocks of count_per_rank, rank r's send block at r*count_per_rank.
  void all_gather(const void* send, void* recv, size_t count_per_rank, CommDType dtype);
  // send holds world_size() blocks of count_per_rank; rank r receives the reduction of block r.
  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, CommDType dtype,
                      ReduceOp op);
  // Returns once every rank reached the barrier and all earlier collectives finished.
  void barrier();

  // The communication stream. Overlap pattern: record `ready` on the compute stream after a
  // bucket's gradients are written, wait_event(ready), all_reduce the bucket, record_event(done)
  // here, and make the optimizer's stream wait on `done`.
  cudaStream_t stream() const { return stream_; }
  void wait_event(cudaEvent_t ready);
  void record_event(cudaEvent_t done);

  // Blocks the host until every collective enqueued so far has finished; throws if the
  // watchdog aborted the communicator (timeout or NCCL error) meanwhile.
  void synchronize();

 private:
  struct Pending {
    std::string op;
    cudaEvent_t done;
    std::chrono::steady_clock::time_point since;
  };
  template <class Launch>
  void enqueue(std::string op, const void* send, const void* recv, Launch launch);
  void check_device_pointer(const std::string& op, const void* pointer) const;
  void throw_if_failed(std::unique_lock<std::mutex>& lock, const std::string& op);
  void wait_ready(std::unique_lock<std::mutex>& lock, const std::string& op);
  void abort_locked(const std::string& why);
  void watch();
  void check_progress_locked();
  cudaEvent_t take_event();
  void shutdown_communicator();

  LaunchEnv env_;
  ProcessGroupOptions options_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int* barrier_word_ = nullptr;  // device scratch for barrier()

  std::mutex mutex_;  // guards everything below and every call on comm_
  std::condition_variable wake_;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  std::string failure_;  // set once the communicator was aborted
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace infllm::distributed

#endif  // INFLLM_WITH_CUDA
