// NCCL process group over real processes and GPUs. The ProcessGroupMultiGpu tests start two
// ranks through launch_local; each rank is this same binary running ProcessGroupRank.Scenario,
// which does nothing unless the launcher started it.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/bf16.h"
#include "core/cuda_check.h"
#include "distributed/launch_env.h"
#include "distributed/launcher.h"
#include "distributed/process_group.h"

namespace infllm::distributed {
namespace {

int gpu_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;  // any error: no GPU
}

std::string env_string(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

template <class T>
struct DeviceBuffer {
  T* data = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) { CUDA_CHECK(cudaMalloc(&data, n * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(data); }
  void upload(const std::vector<T>& host) {
    CUDA_CHECK(cudaMemcpy(data, host.data(), count * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count);
    CUDA_CHECK(cudaMemcpy(host.data(), data, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

// What rank `rank` contributes to collective `tag`: every rank can rebuild every other rank's
// input from the shared seed, so each one checks the full result on its own.
std::mt19937_64 stream_for(uint64_t seed, int tag, int rank) {
  return std::mt19937_64(seed * 7919 + tag * 131 + rank);
}

std::vector<int32_t> random_ints(uint64_t seed, int tag, int rank, size_t n) {
  auto rng = stream_for(seed, tag, rank);
  std::uniform_int_distribution<int32_t> pick(-100000, 100000);
  std::vector<int32_t> out(n);
  for (int32_t& x : out) x = pick(rng);
  return out;
}

template <class T>
std::vector<T> random_reals(uint64_t seed, int tag, int rank, size_t n) {
  auto rng = stream_for(seed, tag, rank);
  std::uniform_real_distribution<double> pick(-1.0, 1.0);
  std::vector<T> out(n);
  for (T& x : out) x = static_cast<T>(pick(rng));
  return out;
}

double rel_error(const std::vector<double>& out, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    diff += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff) / std::sqrt(norm);
}

template <class T>
std::vector<double> as_f64(const std::vector<T>& values) {
  return std::vector<double>(values.begin(), values.end());
}

void check_all_reduce(ProcessGroup& pg, uint64_t seed) {
  const int world = pg.world_size(), rank = pg.rank();
  const size_t n = (1 << 20) + 3;
  // i32 sum: exact.
  DeviceBuffer<int32_t> ints(n);
  ints.upload(random_ints(seed, 1, rank, n));
  pg.all_reduce(ints.data, n, CommDType::i32, ReduceOp::sum);
  pg.synchronize();
  std::vector<int32_t> expected(n, 0);
  for (int r = 0; r < world; ++r) {
    std::vector<int32_t> part = random_ints(seed, 1, r, n);
    for (size_t i = 0; i < n; ++i) expected[i] += part[i];
  }
  EXPECT_EQ(ints.download(), expected) << "i32 all_reduce sum";

  // f32 average against an f64 reference.
  DeviceBuffer<float> floats(n);
  floats.upload(random_reals<float>(seed, 2, rank, n));
  pg.all_reduce(floats.data, n, CommDType::f32, ReduceOp::avg);
  std::vector<double> mean(n, 0.0);
  for (int r = 0; r < world; ++r) {
    std::vector<float> part = random_reals<float>(seed, 2, r, n);
    for (size_t i = 0; i < n; ++i) mean[i] += double(part[i]) / world;
  }
  pg.synchronize();
  EXPECT_LT(rel_error(as_f64(floats.download()), mean), 1e-5) << "f32 all_reduce avg";

  // bf16 sum.
  auto bf16_input = [&](int r) {
    std::vector<float> values = random_reals<float>(seed, 3, r, n);
    std::vector<bf16> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(values[i]);
    return out;
  };
  DeviceBuffer<bf16> halves(n);
  halves.upload(bf16_input(rank));
  pg.all_reduce(halves.data, n, CommDType::bf16, ReduceOp::sum);
  std::vector<double> sum(n, 0.0);
  for (int r = 0; r < world; ++r) {
    std::vector<bf16> part = bf16_input(r);
    for (size_t i = 0; i < n; ++i) sum[i] += bf16_to_float(part[i]);
  }
  pg.synchronize();
  std::vector<double> got(n);
  std::vector<bf16> device_sum = halves.download();
  for (size_t i = 0; i < n; ++i) got[i] = bf16_to_float(device_sum[i]);
  EXPECT_LT(rel_error(got, sum), 1e-2) << "bf16 all_reduce sum";
}

void check_broadcast_gather_scatter(ProcessGroup& pg, uint64_t seed) {
  const int world = pg.world_size(), rank = pg.rank();
  const size_t n = 300007;
  // Broadcast from the last rank: f64 bits arrive unchanged.
  const int root = world - 1;
  DeviceBuffer<double> values(n);
  values.upload(random_reals<double>(seed, 4, rank, n));
  pg.broadcast(values.data, n, CommDType::f64, root);
  pg.synchronize();
  EXPECT_EQ(values.download(), random_reals<double>(seed, 4, root, n)) << "broadcast";

  // All-gather of i64 blocks: rank r's block lands at r * n.
  DeviceBuffer<int64_t> mine(n), all(n * world);
  std::vector<int32_t> small = random_ints(seed, 5, rank, n);
  mine.upload(std::vector<int64_t>(small.begin(), small.end()));
  pg.all_gather(mine.data, all.data, n, CommDType::i64);
  pg.synchronize();
  std::vector<int64_t> gathered = all.download();
  for (int r = 0; r < world; ++r) {
    std::vector<int32_t> block = random_ints(seed, 5, r, n);
    EXPECT_TRUE(std::equal(block.begin(), block.end(), gathered.begin() + r * n))
        << "all_gather block " << r;
  }

  // Reduce-scatter (sum, f32): rank r receives the sum over ranks of block r.
  DeviceBuffer<float> send(n * world), recv(n);
  send.upload(random_reals<float>(seed, 6, rank, n * world));
  pg.reduce_scatter(send.data, recv.data, n, CommDType::f32, ReduceOp::sum);
  std::vector<double> expected(n, 0.0);
  for (int r = 0; r < world; ++r) {
    std::vector<float> full = random_reals<float>(seed, 6, r, n * world);
    for (size_t i = 0; i < n; ++i) expected[i] += full[rank * n + i];
  }
  pg.synchronize();
  EXPECT_LT(rel_error(as_f64(recv.download()), expected), 1e-5) << "reduce_scatter";
}

// The overlap pattern: the compute stream fills a bucket, the communication stream waits on
// its event, reduces, and the compute stream waits for the result.
void check_stream_ordering(ProcessGroup& pg, uint64_t seed) {
  const int world = pg.world_size(), rank = pg.rank();
  const size_t n = 1 << 22;
  cudaStream_t compute;
  CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  cudaEvent_t ready, done;
  CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  int32_t *host_in, *host_out;
  CUDA_CHECK(cudaMallocHost(&host_in, n * sizeof(int32_t)));
  CUDA_CHECK(cudaMallocHost(&host_out, n * sizeof(int32_t)));
  std::vector<int32_t> input = random_ints(seed, 7, rank, n);
  std::copy(input.begin(), input.end(), host_in);
  DeviceBuffer<int32_t> bucket(n);
  CUDA_CHECK(cudaMemsetAsync(bucket.data, 0, n * sizeof(int32_t), compute));
  CUDA_CHECK(
      cudaMemcpyAsync(bucket.data, host_in, n * sizeof(int32_t), cudaMemcpyHostToDevice, compute));
  CUDA_CHECK(cudaEventRecord(ready, compute));
  pg.wait_event(ready);
  pg.all_reduce(bucket.data, n, CommDType::i32, ReduceOp::sum);
  pg.record_event(done);
  CUDA_CHECK(cudaStreamWaitEvent(compute, done, 0));
  CUDA_CHECK(
      cudaMemcpyAsync(host_out, bucket.data, n * sizeof(int32_t), cudaMemcpyDeviceToHost, compute));
  CUDA_CHECK(cudaStreamSynchronize(compute));
  std::vector<int32_t> expected(n, 0);
  for (int r = 0; r < world; ++r) {
    std::vector<int32_t> part = random_ints(seed, 7, r, n);
    for (size_t i = 0; i < n; ++i) expected[i] += part[i];
  }
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), host_out)) << "event ordering";
  cudaFreeHost(host_in);
  cudaFreeHost(host_out);
  cudaEventDestroy(ready);
  cudaEventDestroy(done);
  cudaStreamDestroy(compute);
}

void check_argument_errors(ProcessGroup& pg) {
  DeviceBuffer<float> buffer(16);
  try {
    pg.broadcast(buffer.data, 16, CommDType::f32, pg.world_size());
    ADD_FAILURE() << "root out of range accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("root must be a rank"), std::string::npos);
  }
  std::vector<float> host(16, 1.f);
  try {
    pg.all_reduce(host.data(), 16, CommDType::f32, ReduceOp::sum);
    ADD_FAILURE() << "host pointer accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("not CUDA device memory"), std::string::npos);
  }
}

ProcessGroupOptions rank_options(std::chrono::milliseconds timeout) {
  ProcessGroupOptions options;
  options.timeout = timeout;
  options.rendezvous.timeout = std::chrono::seconds(60);
  options.rendezvous.run_key = "test_process_group";
  return options;
}

void run_collectives(const LaunchEnv& env, uint64_t seed) {
  ProcessGroup pg(env, rank_options(std::chrono::seconds(120)));
  check_all_reduce(pg, seed);
  check_broadcast_gather_scatter(pg, seed);
  check_stream_ordering(pg, seed);
  check_argument_errors(pg);
  pg.barrier();
}

// Rank 1 dies after a first collective; rank 0 must get a clear error within the timeout.
void run_killed_peer(const LaunchEnv& env) {
  if (env.rank == 0) ::signal(SIGTERM, SIG_IGN);  // the launcher's SIGTERM must not pre-empt
  ProcessGroup pg(env, rank_options(std::chrono::seconds(4)));
  DeviceBuffer<float> buffer(1 << 20);
  buffer.upload(std::vector<float>(1 << 20, 1.5f));
  pg.all_reduce(buffer.data, buffer.count, CommDType::f32, ReduceOp::sum);
  pg.synchronize();
  if (env.rank == 1) ::raise(SIGKILL);
  auto start = std::chrono::steady_clock::now();
  std::string message;
  try {
    pg.all_reduce(buffer.data, buffer.count, CommDType::f32, ReduceOp::sum);
    pg.synchronize();
  } catch (const Error& error) {
    message = error.what();
  }
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_THROW(pg.barrier(), Error) << "the aborted communicator must keep failing";
  std::ofstream(env_string("INFLLM_PG_OUT") + "/rank0.txt") << waited << "\n" << message << "\n";
}

TEST(ProcessGroupRank, Scenario) {
  std::string scenario = env_string("INFLLM_PG_SCENARIO");
  if (scenario.empty() || env_string("RANK").empty())
    GTEST_SKIP() << "runs only as a rank started by the ProcessGroupMultiGpu tests";
  LaunchEnv env = detect_launch_env(process_env_reader());
  uint64_t seed = std::stoull(env_string("INFLLM_PG_SEED"));
  if (scenario == "network") {
    // Distinct host ids make NCCL treat the ranks as separate nodes: it must use its network
    // transport (sockets over loopback here) instead of P2P/SHM.
    ::setenv("NCCL_HOSTID", ("infllm-test-host-" + std::to_string(env.rank)).c_str(), 1);
    ::setenv("NCCL_SOCKET_IFNAME", "lo", 1);
    ::setenv("NCCL_DEBUG", "INFO", 1);
    ::setenv("NCCL_DEBUG_FILE",
             (env_string("INFLLM_PG_OUT") + "/nccl." + std::to_string(env.rank) + ".log").c_str(),
             1);
  }
  if (scenario == "killed")
    run_killed_peer(env);
  else
    run_collectives(env, seed);
}

class ProcessGroupMultiGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = gpu_count();
    if (count < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << count;
    char pattern[] = "/tmp/infllm_pg_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    out_dir_ = pattern;
  }
  void TearDown() override {
    if (!out_dir_.empty()) std::filesystem::remove_all(out_dir_);
  }

  // Runs this binary's ProcessGroupRank.Scenario as 2 ranks; returns the launcher's code.
  int run_ranks(const std::string& scenario, std::chrono::milliseconds grace) {
    ::setenv("INFLLM_PG_SCENARIO", scenario.c_str(), 1);
    ::setenv("INFLLM_PG_SEED", std::to_string(std::random_device{}()).c_str(), 1);
    ::setenv("INFLLM_PG_OUT", out_dir_.c_str(), 1);
    LocalLaunchOptions options;
    options.kill_grace = grace;
    options.report = [this](const std::string& line) {
      std::cerr << line << std::endl;
      report_ += line + "\n";
    };
    std::string self = std::filesystem::read_symlink("/proc/self/exe");
    int code = launch_local(2, {self, "--gtest_filter=ProcessGroupRank.Scenario"}, options);
    ::unsetenv("INFLLM_PG_SCENARIO");
    return code;
  }

  std::string read_all(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string out_dir_;
  std::string report_;
};

TEST_F(ProcessGroupMultiGpu, CollectivesAreExact) {
  EXPECT_EQ(run_ranks("collectives", std::chrono::seconds(10)), 0) << report_;
}

TEST_F(ProcessGroupMultiGpu, NetworkTransportWithDistinctHostIds) {
  EXPECT_EQ(run_ranks("network", std::chrono::seconds(10)), 0) << report_;
  for (int rank = 0; rank < 2; ++rank) {
    std::string log = read_all(out_dir_ + "/nccl." + std::to_string(rank) + ".log");
    EXPECT_NE(log.find("via NET/"), std::string::npos) << "rank " << rank << " log:\n" << log;
    EXPECT_EQ(log.find("via P2P"), std::string::npos) << "rank " << rank << " used P2P";
    EXPECT_EQ(log.find("via SHM"), std::string::npos) << "rank " << rank << " used SHM";
  }
}

TEST_F(ProcessGroupMultiGpu, KilledRankMakesTheOtherFailFast) {
  auto start = std::chrono::steady_clock::now();
  int code = run_ranks("killed", std::chrono::seconds(60));
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(code, 128 + SIGKILL) << report_;
  EXPECT_LT(took, 45.0) << "rank 0 did not leave on its own (the launcher's grace is 60 s)";
  std::ifstream in(out_dir_ + "/rank0.txt");
  double waited = -1;
  in >> waited;
  std::string message((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::cerr << "rank 0 saw after " << waited << " s:" << message;
  EXPECT_GE(waited, 0.0) << "rank 0 wrote no result";
  EXPECT_LT(waited, 20.0) << "the watchdog did not fire in time (timeout 4 s)";
  EXPECT_NE(message.find("rank 0"), std::string::npos) << message;
  EXPECT_NE(message.find("all_reduce"), std::string::npos) << message;
  EXPECT_NE(message.find("aborted"), std::string::npos) << message;
}

}  // namespace
}  // namespace infllm::distributed
