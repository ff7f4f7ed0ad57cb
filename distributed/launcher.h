// Starts N ranks of one program on this machine, torchrun-style: each child gets RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT (CUDA_VISIBLE_DEVICES is
// left alone; rank r uses device LOCAL_RANK). The first rank to fail takes the others down.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace infllm::distributed {

struct LocalLaunchOptions {
  int master_port = 0;  // 0: pick a free port
  // After a rank fails (or SIGINT/SIGTERM arrives) the others get SIGTERM; those still alive
  // after this grace period get SIGKILL.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(10)};
  // Where the launcher's own messages go (the ranks keep their stdout/stderr); stderr if empty.
  std::function<void(const std::string&)> report;
};

// Runs `argv` (argv[0] is searched in PATH) as nproc ranks and waits for all of them. Returns 0
// when every rank exits 0. Otherwise returns the first failed rank's exit code (128 + signal
// number when it was killed by a signal) and reports which rank failed and how. SIGINT and
// SIGTERM sent to the launcher are forwarded to every rank; the launcher then waits for them
// (a trainer saves a checkpoint) and returns 128 + that signal.
int launch_local(int nproc, const std::vector<std::string>& argv,
                 const LocalLaunchOptions& options = {});

}  // namespace infllm::distributed
