// ProcessGroup over NCCL (CUDA builds; distributed/no_cuda.cpp stands in without CUDA).
#include "distributed/process_group.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "core/cuda_check.h"
#include "distributed/nccl_check.h"

namespace infllm::distributed {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kReadyPoll = std::chrono::microseconds(100);

ncclDataType_t to_nccl(CommDType dtype) {
  switch (dtype) {
    case CommDType::f32:
      return ncclFloat32;
    case CommDType::bf16:
      return ncclBfloat16;
    case CommDType::i32:
      return ncclInt32;
    case CommDType::i64:
      return ncclInt64;
    case CommDType::f64:
      return ncclFloat64;
  }
  fail("process group: unknown CommDType ", static_cast<int>(dtype));
}

ncclRedOp_t to_nccl(ReduceOp op) {
  return op == ReduceOp::sum ? ncclSum : ncclAvg;
}
const char* op_name(ReduceOp op) {
  return op == ReduceOp::sum ? "sum" : "avg";
}

std::string describe(const char* name, const std::string& detail, size_t count, CommDType dtype) {
  std::ostringstream out;
  out << name << "(" << detail << comm_dtype_name(dtype) << " x " << count << ")";
  return out.str();
}

double seconds(std::chrono::milliseconds duration) {
  return duration.count() / 1000.0;
}

// NCCL_NVLS_ENABLE must be decided before the first NCCL call of the process.
void keep_nvlink_multicast_off() {
  ::setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
}

int pick_device(const LaunchEnv& env, const ProcessGroupOptions& options) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess)
    fail("process group: rank ", env.rank, " sees no CUDA device (", cudaGetErrorString(status),
         "); multi-process training needs one GPU per rank");
  // A rank that sees exactly one GPU was given it by its launcher (srun --gpus-per-task=1,
  // CUDA_VISIBLE_DEVICES per rank): use it whatever its local rank.
  int device = options.device >= 0 ? options.device : count == 1 ? 0 : env.local_rank;
  if (device >= count)
    fail("process group: rank ", env.rank, " wants CUDA device ", device,
         " (LOCAL_RANK=", env.local_rank, ") but only ", count, " are visible; start at most ",
         count, " ranks per node or fix CUDA_VISIBLE_DEVICES");
  return device;
}

}  // namespace

// Everything that touches NCCL or the CUDA runtime. ProcessGroup's members forward here.
class ProcessGroup::Communicator {
 public:
  Communicator(const LaunchEnv& env, const ProcessGroupOptions& options);
  ~Communicator();

  int device() const { return device_; }
  template <class Launch>
  void enqueue(std::string op, const void* send, const void* recv, Launch launch);
  cudaStream_t stream() const { return stream_; }
  int* barrier_word() const { return barrier_word_; }
  void synchronize();

 private:
  struct Pending {
    std::string op;
    cudaEvent_t done;
    std::chrono::steady_clock::time_point since;
  };
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

ProcessGroup::Communicator::Communicator(const LaunchEnv& env, const ProcessGroupOptions& options)
    : env_(env), options_(options) {
  keep_nvlink_multicast_off();
  device_ = pick_device(env, options);
  CUDA_CHECK(cudaSetDevice(device_));

  ncclUniqueId id;
  std::vector<uint8_t> blob;
  if (env.rank == 0) {
    NCCL_CHECK(ncclGetUniqueId(&id));
    blob.assign(reinterpret_cast<uint8_t*>(&id), reinterpret_cast<uint8_t*>(&id) + sizeof(id));
  }
  blob = exchange_unique_id(env, options.rendezvous, std::move(blob));
  if (blob.size() != sizeof(id))
    fail("process group: rank ", env.rank, " received a ", blob.size(),
         "-byte NCCL unique id; expected ", sizeof(id));
  std::memcpy(&id, blob.data(), sizeof(id));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once, so the watchdog can always abort
  std::unique_lock<std::mutex> lock(mutex_);
  NCCL_CHECK(ncclCommInitRankConfig(&comm_, env.world_size, id, env.rank, &config));
  wait_ready(lock, "communicator setup");
  lock.unlock();

  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(int)));
  CUDA_CHECK(cudaMemset(barrier_word_, 0, sizeof(int)));
  watchdog_ = std::thread([this] { watch(); });
}

ProcessGroup::Communicator::~Communicator() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  shutdown_communicator();
  for (const Pending& pending : pending_) cudaEventDestroy(pending.done);
  for (cudaEvent_t event : free_events_) cudaEventDestroy(event);
  if (barrier_word_ != nullptr) cudaFree(barrier_word_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

// A healthy communicator is finalized (flushes outstanding work on every rank), then
// destroyed. While an exception unwinds, a peer may be gone: abort instead of waiting.
void ProcessGroup::Communicator::shutdown_communicator() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (comm_ == nullptr) return;
  if (std::uncaught_exceptions() > 0) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    return;
  }
  try {
    NCCL_CHECK(ncclCommFinalize(comm_));
    wait_ready(lock, "communicator shutdown");
    NCCL_CHECK(ncclCommDestroy(comm_));
    comm_ = nullptr;
  } catch (const Error&) {
    if (comm_ != nullptr) ncclCommAbort(comm_);  // a destructor must not throw
    comm_ = nullptr;
  }
}

void ProcessGroup::Communicator::throw_if_failed(std::unique_lock<std::mutex>& lock,
                                                 const std::string& op) {
  if (failure_.empty()) return;
  std::string why = failure_;
  lock.unlock();
  fail(why, " [while calling ", op, " on rank ", env_.rank, "]");
}

// Non-blocking NCCL calls may leave the communicator "in progress"; poll until it settles,
// releasing the lock between polls so the watchdog can still abort.
void ProcessGroup::Communicator::wait_ready(std::unique_lock<std::mutex>& lock,
                                            const std::string& op) {
  auto deadline = Clock::now() + options_.timeout;
  while (true) {
    throw_if_failed(lock, op);
    ncclResult_t state = ncclSuccess;
    NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) {
      std::ostringstream why;
      why << "process group: rank " << env_.rank << ": NCCL failed during " << op << ": "
          << ncclGetErrorString(state) << " (" << ncclGetLastError(comm_) << ")";
      abort_locked(why.str());
    } else if (Clock::now() > deadline) {
      std::ostringstream why;
      why << "process group: rank " << env_.rank << ": " << op << " did not finish within "
          << seconds(options_.timeout) << " s; aborted the NCCL communicator (did every rank "
          << "start and call it?)";
      abort_locked(why.str());
    } else {
      lock.unlock();
      std::this_thread::sleep_for(kReadyPoll);
      lock.lock();
    }
  }
}

void ProcessGroup::Communicator::abort_locked(const std::string& why) {
  if (!failure_.empty()) return;
  failure_ = why;
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
}

cudaEvent_t ProcessGroup::Communicator::take_event() {
  if (!free_events_.empty()) {
    cudaEvent_t event = free_events_.back();
    free_events_.pop_back();
    return event;
  }
  cudaEvent_t event;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return event;
}

void ProcessGroup::Communicator::check_device_pointer(const std::string& op,
                                                      const void* pointer) const {
  cudaPointerAttributes attributes{};
  CUDA_CHECK(cudaPointerGetAttributes(&attributes, pointer));
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)
    fail("process group: ", op, " on rank ", env_.rank, " got a pointer that is not CUDA device ",
         "memory; pass buffers allocated on cuda:", device_);
  if (attributes.device != device_)
    fail("process group: ", op, " on rank ", env_.rank, " got memory of cuda:", attributes.device,
         " but the communicator runs on cuda:", device_);
}

template <class Launch>
void ProcessGroup::Communicator::enqueue(std::string op, const void* send, const void* recv,
                                         Launch launch) {
  check_device_pointer(op, send);
  check_device_pointer(op, recv);
  std::unique_lock<std::mutex> lock(mutex_);
  throw_if_failed(lock, op);
  ncclResult_t result = launch(comm_, stream_);
  if (result != ncclSuccess && result != ncclInProgress) {
    std::ostringstream why;
    why << "process group: rank " << env_.rank << ": " << op
        << " failed to start: " << ncclGetErrorString(result) << " (" << ncclGetLastError(comm_)
        << ")";
    abort_locked(why.str());
  }
  wait_ready(lock, op);
  cudaEvent_t done = take_event();
  CUDA_CHECK(cudaEventRecord(done, stream_));
  pending_.push_back({std::move(op), done, Clock::now()});
}

void ProcessGroup::all_reduce(void* data, size_t count, CommDType dtype, ReduceOp op) {
  communicator_->enqueue(describe("all_reduce", std::string(op_name(op)) + ", ", count, dtype),
                         data, data, [&](ncclComm_t comm, cudaStream_t stream) {
                           return ncclAllReduce(data, data, count, to_nccl(dtype), to_nccl(op),
                                                comm, stream);
                         });
}

void ProcessGroup::broadcast(void* data, size_t count, CommDType dtype, int root) {
  std::string op = describe("broadcast", "root " + std::to_string(root) + ", ", count, dtype);
  if (root < 0 || root >= env_.world_size)
    fail("process group: ", op, ": root must be a rank in [0, ", env_.world_size, ")");
  communicator_->enqueue(op, data, data, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclBroadcast(data, data, count, to_nccl(dtype), root, comm, stream);
  });
}

void ProcessGroup::all_gather(const void* send, void* recv, size_t count_per_rank,
                              CommDType dtype) {
  communicator_->enqueue(describe("all_gather", "", count_per_rank, dtype), send, recv,
                         [&](ncclComm_t comm, cudaStream_t stream) {
                           return ncclAllGather(send, recv, count_per_rank, to_nccl(dtype), comm,
                                                stream);
                         });
}

void ProcessGroup::reduce_scatter(const void* send, void* recv, size_t count_per_rank,
                                  CommDType dtype, ReduceOp op) {
  communicator_->enqueue(
      describe("reduce_scatter", std::string(op_name(op)) + ", ", count_per_rank, dtype), send,
      recv, [&](ncclComm_t comm, cudaStream_t stream) {
        return ncclReduceScatter(send, recv, count_per_rank, to_nccl(dtype), to_nccl(op), comm,
                                 stream);
      });
}

ProcessGroup::ProcessGroup(const LaunchEnv& env, const ProcessGroupOptions& options)
    : env_(env), communicator_(std::make_unique<Communicator>(env, options)) {
  device_ = communicator_->device();
}

ProcessGroup::~ProcessGroup() = default;

void* ProcessGroup::stream() const {
  return communicator_->stream();
}

void ProcessGroup::synchronize() {
  communicator_->synchronize();
}

void ProcessGroup::barrier() {
  all_reduce(communicator_->barrier_word(), 1, CommDType::i32, ReduceOp::sum);
  synchronize();
}

void ProcessGroup::wait_event(void* ready) {
  CUDA_CHECK(cudaStreamWaitEvent(communicator_->stream(), static_cast<cudaEvent_t>(ready), 0));
}

void ProcessGroup::record_event(void* done) {
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(done), communicator_->stream()));
}

// Polls instead of cudaStreamSynchronize: a wedged collective must surface the watchdog's
// error rather than block this thread forever.
void ProcessGroup::Communicator::synchronize() {
  std::unique_lock<std::mutex> lock(mutex_);
  throw_if_failed(lock, "synchronize");
  cudaEvent_t done = take_event();
  CUDA_CHECK(cudaEventRecord(done, stream_));
  while (true) {
    cudaError_t state = cudaEventQuery(done);
    if (state == cudaSuccess || !failure_.empty()) break;
    if (state != cudaErrorNotReady) CUDA_CHECK(state);
    lock.unlock();
    std::this_thread::sleep_for(kReadyPoll);
    lock.lock();
  }
  free_events_.push_back(done);
  check_progress_locked();
  throw_if_failed(lock, "synchronize");
}

void ProcessGroup::Communicator::watch() {
  cudaSetDevice(device_);  // events belong to this device's context
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, options_.watchdog_period);
    if (!stopping_ && failure_.empty()) check_progress_locked();
  }
}

// Retires finished collectives, then aborts on an NCCL error or an overdue head collective.
void ProcessGroup::Communicator::check_progress_locked() {
  if (!failure_.empty()) return;
  auto now = Clock::now();
  while (!pending_.empty()) {
    cudaError_t state = cudaEventQuery(pending_.front().done);
    if (state == cudaErrorNotReady) break;
    if (state != cudaSuccess) {
      abort_locked("process group: rank " + std::to_string(env_.rank) + ": CUDA error " +
                   cudaGetErrorString(state) + " during " + pending_.front().op);
      return;
    }
    free_events_.push_back(pending_.front().done);
    pending_.pop_front();
    if (!pending_.empty()) pending_.front().since = std::max(pending_.front().since, now);
  }
  ncclResult_t async = ncclSuccess;
  ncclResult_t query = ncclCommGetAsyncError(comm_, &async);
  std::string during = pending_.empty() ? std::string("idle") : pending_.front().op;
  if (query != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
    std::ostringstream why;
    why << "process group: rank " << env_.rank << ": NCCL reported "
        << ncclGetErrorString(query != ncclSuccess ? query : async) << " during " << during << " ("
        << ncclGetLastError(comm_) << "); aborted the communicator. A peer rank probably "
        << "died: check the other ranks' logs";
    abort_locked(why.str());
  } else if (!pending_.empty() && now - pending_.front().since > options_.timeout) {
    std::ostringstream why;
    why << "process group: rank " << env_.rank << ": " << during << " did not finish within "
        << seconds(options_.timeout) << " s (the collective timeout); aborted the NCCL "
        << "communicator. Another rank probably died or stopped calling collectives: check "
        << "the other ranks' logs; raise the timeout if a step legitimately takes longer";
    abort_locked(why.str());
  }
}

}  // namespace infllm::distributed
