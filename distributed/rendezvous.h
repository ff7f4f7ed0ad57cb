// Rank 0 hands one opaque blob (the 128-byte NCCL unique id) to every other rank, either over
// TCP at MASTER_ADDR:MASTER_PORT ("env") or through a file on a shared filesystem ("file:PATH").
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "distributed/launch_env.h"

namespace infllm::distributed {

enum class RendezvousMode { env, file };

struct RendezvousOptions {
  RendezvousMode mode = RendezvousMode::env;
  std::string file_path;  // file mode: where rank 0 publishes the blob (a fresh path per run)
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  std::string run_key;  // every rank must pass the same one: stray processes of other runs
                        // and stale files are rejected instead of joining the wrong job
};

// "env" or "file:/shared/path" (the recipe's distributed.rendezvous value).
RendezvousOptions parse_rendezvous_spec(const std::string& spec);

// Collective over all ranks of `env`: rank 0 passes the blob, the others an empty vector; every
// rank returns rank 0's blob. TCP mode also checks that all ranks agree on the world size and
// run key and that each rank joins once; any disagreement fails on rank 0 and on the rank(s)
// involved, and ranks that never connect within the timeout are named in rank 0's error.
std::vector<uint8_t> exchange_unique_id(const LaunchEnv& env, const RendezvousOptions& options,
                                        std::vector<uint8_t> blob_if_rank0);

// Blocks until every rank of `env` reached the barrier named `name` (TCP at MASTER_ADDR:PORT,
// same checks and timeout as the exchange). For host-side steps that have no NCCL communicator,
// e.g. "rank 0 finished writing the prepared data".
void tcp_barrier(const LaunchEnv& env, const RendezvousOptions& options, const std::string& name);

}  // namespace infllm::distributed
