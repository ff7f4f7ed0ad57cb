// Rendezvous between real processes on localhost: TCP (env) and shared-file modes.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include "distributed/rendezvous.h"
#include "distributed/tcp_socket.h"
#include "fork_helpers.h"

namespace infllm::distributed {
namespace {

using testing::Child;
using testing::ChildResult;
using testing::fork_child;
using testing::wait_child;

std::vector<uint8_t> random_blob(size_t bytes) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<uint8_t> blob(bytes);
  for (uint8_t& b : blob) b = static_cast<uint8_t>(rng());
  return blob;
}

LaunchEnv local_env(int rank, int world, int port) {
  LaunchEnv env;
  env.rank = rank;
  env.world_size = world;
  env.local_rank = rank;
  env.master_addr = "127.0.0.1";
  env.master_port = port;
  env.launcher = "test";
  return env;
}

RendezvousOptions tcp_options(std::chrono::milliseconds timeout) {
  RendezvousOptions options;
  options.timeout = timeout;
  options.run_key = "test-run";
  return options;
}

// Rank 0 runs in this process; ranks 1..world-1 in forked children that check the bytes.
TEST(Rendezvous, TcpDeliversTheBlobIntactToEveryRank) {
  for (int world = 2; world <= 4; ++world) {
    int port = pick_free_port();
    std::vector<uint8_t> blob = random_blob(128);
    RendezvousOptions options = tcp_options(std::chrono::seconds(20));
    std::vector<Child> children;
    for (int rank = 1; rank < world; ++rank)
      children.push_back(fork_child([&, rank]() -> std::string {
        std::vector<uint8_t> got = exchange_unique_id(local_env(rank, world, port), options, {});
        return got == blob ? "" : "rank " + std::to_string(rank) + " got different bytes";
      }));
    // Start late, so the children exercise their connect retries.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::vector<uint8_t> mine = exchange_unique_id(local_env(0, world, port), options, blob);
    EXPECT_EQ(mine, blob);
    for (const Child& child : children) {
      ChildResult result = wait_child(child);
      EXPECT_EQ(result.exit_code, 0) << "world " << world << ": " << result.message;
    }
  }
}

TEST(Rendezvous, WrongWorldSizeFailsOnBothSides) {
  int port = pick_free_port();
  RendezvousOptions options = tcp_options(std::chrono::seconds(20));
  Child child = fork_child([&]() -> std::string {
    exchange_unique_id(local_env(1, 3, port), options, {});
    return "rank 1 with the wrong world size was accepted";
  });
  std::string rank0_error;
  try {
    exchange_unique_id(local_env(0, 2, port), options, random_blob(128));
  } catch (const Error& error) {
    rank0_error = error.what();
  }
  ChildResult result = wait_child(child);
  EXPECT_NE(rank0_error.find("world size mismatch: rank 1 has WORLD_SIZE=3 but rank 0 has "
                             "WORLD_SIZE=2"),
            std::string::npos)
      << rank0_error;
  EXPECT_EQ(result.exit_code, 2) << result.message;
  EXPECT_NE(result.message.find("world size mismatch"), std::string::npos) << result.message;
}

TEST(Rendezvous, MissingRankTimesOutNamingIt) {
  int port = pick_free_port();
  RendezvousOptions options = tcp_options(std::chrono::milliseconds(1500));
  // World of 4; ranks 1 and 3 show up, rank 2 never does.
  std::vector<Child> children;
  for (int rank : {1, 3})
    children.push_back(fork_child([&, rank]() -> std::string {
      exchange_unique_id(local_env(rank, 4, port), options, {});
      return "rank joined a rendezvous that should have failed";
    }));
  auto start = std::chrono::steady_clock::now();
  std::string rank0_error;
  try {
    exchange_unique_id(local_env(0, 4, port), options, random_blob(128));
  } catch (const Error& error) {
    rank0_error = error.what();
  }
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(rank0_error.find("rank(s) 2 of WORLD_SIZE=4 never connected"), std::string::npos)
      << rank0_error;
  EXPECT_GE(waited, 1.4);
  EXPECT_LT(waited, 10.0);
  for (const Child& child : children) {
    ChildResult result = wait_child(child);
    EXPECT_EQ(result.exit_code, 2) << result.message;
    EXPECT_NE(result.message.find("never connected"), std::string::npos) << result.message;
  }
}

TEST(Rendezvous, NoRankZeroTimesOutNamingTheAddress) {
  int port = pick_free_port();
  try {
    exchange_unique_id(local_env(1, 2, port), tcp_options(std::chrono::milliseconds(500)), {});
    FAIL() << "expected a timeout";
  } catch (const Error& error) {
    std::string text = error.what();
    EXPECT_NE(text.find("could not connect to rank 0 at 127.0.0.1:" + std::to_string(port)),
              std::string::npos)
        << text;
  }
}

TEST(Rendezvous, RunKeyMismatchIsRejected) {
  int port = pick_free_port();
  Child child = fork_child([&]() -> std::string {
    RendezvousOptions other = tcp_options(std::chrono::seconds(20));
    other.run_key = "another-run";
    exchange_unique_id(local_env(1, 2, port), other, {});
    return "a rank of another run was accepted";
  });
  EXPECT_THROW(exchange_unique_id(local_env(0, 2, port), tcp_options(std::chrono::seconds(20)),
                                  random_blob(16)),
               Error);
  ChildResult result = wait_child(child);
  EXPECT_EQ(result.exit_code, 2) << result.message;
  EXPECT_NE(result.message.find("another-run"), std::string::npos) << result.message;
}

TEST(Rendezvous, BarrierRoundsReuseThePort) {
  int port = pick_free_port();
  RendezvousOptions options = tcp_options(std::chrono::seconds(20));
  const int world = 3;
  std::vector<Child> children;
  for (int rank = 1; rank < world; ++rank)
    children.push_back(fork_child([&, rank]() -> std::string {
      for (int round = 0; round < 5; ++round)
        tcp_barrier(local_env(rank, world, port), options, "round" + std::to_string(round));
      return "";
    }));
  for (int round = 0; round < 5; ++round)
    tcp_barrier(local_env(0, world, port), options, "round" + std::to_string(round));
  for (const Child& child : children) {
    ChildResult result = wait_child(child);
    EXPECT_EQ(result.exit_code, 0) << result.message;
  }
}

TEST(Rendezvous, FileModeDeliversTheBlob) {
  testing::TempDir dir;
  std::string path = dir.path + "/unique_id";
  RendezvousOptions options = parse_rendezvous_spec("file:" + path);
  options.timeout = std::chrono::seconds(20);
  std::vector<uint8_t> blob = random_blob(128);
  const int world = 3;
  std::vector<Child> children;
  for (int rank = 1; rank < world; ++rank)
    children.push_back(fork_child([&, rank]() -> std::string {
      std::vector<uint8_t> got = exchange_unique_id(local_env(rank, world, 0), options, {});
      return got == blob ? "" : "different bytes";
    }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // readers poll first
  EXPECT_EQ(exchange_unique_id(local_env(0, world, 0), options, blob), blob);
  for (const Child& child : children) {
    ChildResult result = wait_child(child);
    EXPECT_EQ(result.exit_code, 0) << result.message;
  }
}

TEST(Rendezvous, FileModeRejectsAFileOfAnotherWorldSize) {
  testing::TempDir dir;
  std::string path = dir.path + "/unique_id";
  RendezvousOptions options = parse_rendezvous_spec("file:" + path);
  exchange_unique_id(local_env(0, 4, 0), options, random_blob(128));
  try {
    exchange_unique_id(local_env(1, 2, 0), options, {});
    FAIL() << "expected a world size mismatch";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("world size mismatch"), std::string::npos)
        << error.what();
  }
}

TEST(Rendezvous, FileModeTimeoutNamesThePath) {
  testing::TempDir dir;
  std::string path = dir.path + "/never_written";
  RendezvousOptions options = parse_rendezvous_spec("file:" + path);
  options.timeout = std::chrono::milliseconds(300);
  try {
    exchange_unique_id(local_env(1, 2, 0), options, {});
    FAIL() << "expected a timeout";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
  }
}

TEST(Rendezvous, SpecParsing) {
  EXPECT_EQ(parse_rendezvous_spec("env").mode, RendezvousMode::env);
  RendezvousOptions file = parse_rendezvous_spec("file:/shared/x");
  EXPECT_EQ(file.mode, RendezvousMode::file);
  EXPECT_EQ(file.file_path, "/shared/x");
  EXPECT_THROW(parse_rendezvous_spec("tcp://host"), Error);
  EXPECT_THROW(parse_rendezvous_spec("file:"), Error);
}

TEST(Rendezvous, SingleProcessReturnsItsOwnBlob) {
  std::vector<uint8_t> blob = random_blob(128);
  EXPECT_EQ(exchange_unique_id(LaunchEnv{}, RendezvousOptions{}, blob), blob);
}

}  // namespace
}  // namespace infllm::distributed
