// Where this process sits in a multi-process job: its rank, the world size, its GPU on the
// node, and how to reach rank 0. Read from whichever launcher started the process.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace infllm::distributed {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;       // index of this process on its node: its CUDA device
  std::string master_addr;  // host of rank 0; empty for a single process
  int master_port = 0;      // rank 0's rendezvous port; 0 for a single process
  std::string launcher;     // "single", "torchrun", "slurm" or "openmpi"
};

// Looks up one environment variable; tests pass a map, programs the process environment.
using EnvReader = std::function<std::optional<std::string>(const std::string& name)>;
EnvReader process_env_reader();

// Precedence: torchrun-style variables (RANK/WORLD_SIZE, also what `infllm train --nproc`
// sets), then OpenMPI (mpirun inside a Slurm allocation still sees SLURM_*), then Slurm,
// else a single process. Bad or missing values throw an infllm::Error naming the variable.
LaunchEnv detect_launch_env(const EnvReader& env);

// Expands a Slurm host list: "gpu[01-04,07],login" -> gpu01 gpu02 gpu03 gpu04 gpu07 login.
// Zero padding of a range is kept; several bracket groups in one name multiply out.
std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist);

// The rendezvous port a Slurm job uses when MASTER_PORT is not set: every rank of the job
// derives the same one from SLURM_JOB_ID, in [10000, 30000) below the ephemeral range.
int slurm_default_port(long long job_id);

}  // namespace infllm::distributed
