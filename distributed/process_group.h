// One NCCL communicator over all ranks of a run, with its own CUDA stream and a watchdog:
// a collective that does not finish within the timeout (a rank died or hangs) aborts the
// communicator, and the next call on any thread throws an infllm::Error naming the rank, the
// operation and the timeout. The caller never hangs on a dead peer.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
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

class ProcessGroup {
 public:
  // Collective over all ranks: sets this thread's CUDA device, exchanges the NCCL unique id
  // through the rendezvous and builds a non-blocking communicator. Sets NCCL_NVLS_ENABLE=0
  // unless the environment already chose (NVLink multicast can wedge shared hosts). A CPU-only
  // build throws here (distributed/no_cuda.cpp), so no other member is ever reached there.
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

  // The communication stream, a cudaStream_t held as void* (as core's device_stream does) so
  // this header needs no CUDA. Overlap pattern: record `ready` (a cudaEvent_t) on the compute
  // stream after a bucket's gradients are written, wait_event(ready), all_reduce the bucket,
  // record_event(done) here, and make the optimizer's stream wait on `done`.
  void* stream() const;
  void wait_event(void* ready);
  void record_event(void* done);

  // Blocks the host until every collective enqueued so far has finished; throws if the
  // watchdog aborted the communicator (timeout or NCCL error) meanwhile.
  void synchronize();

 private:
  // The NCCL communicator, its stream and its watchdog thread: defined in
  // process_group_nccl.cpp, where the CUDA and NCCL types are.
  class Communicator;

  LaunchEnv env_;
  int device_ = 0;
  std::unique_ptr<Communicator> communicator_;
};

}  // namespace infllm::distributed
