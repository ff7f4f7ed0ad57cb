// The run folder's owner lock and start rules, across real processes (fork): a second claim
// fails with the holder's pid, a killed holder's lock does not block, a fresh start into an
// earlier run is refused, --overwrite moves the earlier run aside without losing a byte.
#include "train/run_folder.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "tests/train/infllm_cli.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::read_bytes;
using testing::snapshot;

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// Claims `dir` in a child process and reports the outcome through a pipe: "ok", or the
// error's message.
std::string claim_in_child(const std::string& dir, RunStart start) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    std::string result = "ok";
    try {
      RunFolder folder(dir, start);
    } catch (const Error& error) {
      result = error.what();
    }
    (void)!write(fds[1], result.data(), result.size());
    _exit(0);
  }
  close(fds[1]);
  std::string result;
  char buffer[1024];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) result.append(buffer, size_t(n));
  close(fds[0]);
  waitpid(child, nullptr, 0);
  return result;
}

TEST(RunFolder, ASecondWriterFailsAtOnceNamingTheHoldersPid) {
  const std::string dir = fresh_dir("lock-second");
  RunFolder held(dir, RunStart::fresh);
  const std::string lock = dir + "/" + RunFolder::kLockName;
  EXPECT_NE(read_bytes(lock).find("pid " + std::to_string(getpid())), std::string::npos);
  auto begin = std::chrono::steady_clock::now();
  const std::string result = claim_in_child(dir, RunStart::resume);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  EXPECT_NE(result.find("in use by another infllm run"), std::string::npos) << result;
  EXPECT_NE(result.find("pid " + std::to_string(getpid())), std::string::npos) << result;
  EXPECT_NE(result.find(dir), std::string::npos) << result;
}

TEST(RunFolder, TheLockOfAKilledProcessDoesNotBlock) {
  const std::string dir = fresh_dir("lock-killed");
  fs::create_directories(dir);
  pid_t holder = fork();
  if (holder == 0) {
    RunFolder folder(dir, RunStart::fresh);
    pause();
    _exit(0);
  }
  const std::string lock = dir + "/" + RunFolder::kLockName;
  const std::string holder_pid = "pid " + std::to_string(holder);
  for (int i = 0; i < 500 && read_bytes(lock).find(holder_pid) == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_NE(read_bytes(lock).find(holder_pid), std::string::npos) << "the child never claimed";
  EXPECT_NE(claim_in_child(dir, RunStart::fresh).find(holder_pid), std::string::npos);
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  EXPECT_TRUE(fs::exists(lock)) << "kill -9 leaves the lock file behind";
  EXPECT_EQ(claim_in_child(dir, RunStart::fresh), "ok");
  RunFolder folder(dir, RunStart::fresh);
  EXPECT_NE(read_bytes(lock).find("pid " + std::to_string(getpid())), std::string::npos);
}

TEST(RunFolder, AnUnacceptedClaimLeavesNothingBehind) {
  const std::string dir = fresh_dir("lock-unaccepted");
  { RunFolder folder(dir, RunStart::fresh); }
  EXPECT_FALSE(fs::exists(dir)) << "the claim created the folder, so it removes it again";
  write_file(dir + "/notes.txt", "mine");
  { RunFolder folder(dir, RunStart::fresh); }
  EXPECT_EQ(snapshot(dir), (std::map<std::string, std::string>{{"notes.txt", "mine"}}));
}

TEST(RunFolder, AFreshStartIntoAnEarlierRunIsRefused) {
  const std::string dir = fresh_dir("lock-earlier");
  write_file(dir + "/checkpoints/step_00000004.h5", "four");
  write_file(dir + "/checkpoints/step_00000008.h5", "eight");
  write_file(dir + "/metrics.jsonl", "{\"step\": 8}\n");
  const auto before = snapshot(dir);
  try {
    RunFolder folder(dir, RunStart::fresh);
    ADD_FAILURE() << "a fresh start into an earlier run must fail";
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const char* part : {"already holds a run", "2 checkpoints", "step_00000008.h5",
                             "metrics.jsonl", "--resume", "--overwrite"})
      EXPECT_NE(message.find(part), std::string::npos) << part << " missing: " << message;
  }
  EXPECT_EQ(snapshot(dir), before);
  EXPECT_NE(claim_in_child(dir, RunStart::fresh).find("already holds"), std::string::npos)
      << "the refused claim released its lock";
  { RunFolder resumed(dir, RunStart::resume); }
  EXPECT_EQ(snapshot(dir), before);
}

TEST(RunFolder, OverwriteMovesTheEarlierRunAsideOnlyOnceAccepted) {
  const std::string dir = fresh_dir("lock-overwrite");
  write_file(dir + "/checkpoints/step_00000008.h5", "eight");
  write_file(dir + "/metrics.jsonl", "{\"step\": 8}\n");
  write_file(dir + "/recipe.yaml", "old recipe");
  write_file(dir + "/events.out.tfevents.1.host", "events");
  write_file(dir + "/notes.txt", "not the run's");
  const auto before = snapshot(dir);
  { RunFolder rejected(dir, RunStart::overwrite); }  // never accepted: nothing moves
  EXPECT_EQ(snapshot(dir), before);
  RunFolder folder(dir, RunStart::overwrite);
  const std::string moved = folder.accept("new recipe");
  ASSERT_FALSE(moved.empty());
  EXPECT_EQ(fs::path(moved).parent_path(), fs::path(dir));
  EXPECT_EQ(fs::path(moved).filename().string().rfind("previous-", 0), 0u) << moved;
  std::map<std::string, std::string> kept;
  for (const auto& [name, bytes] : before)
    if (name != "notes.txt") kept[name] = bytes;
  EXPECT_EQ(snapshot(moved), kept) << "every file of the earlier run, byte for byte";
  EXPECT_EQ(read_bytes(dir + "/recipe.yaml"), "new recipe");
  EXPECT_EQ(read_bytes(dir + "/notes.txt"), "not the run's");
  EXPECT_TRUE(fs::is_directory(dir + "/checkpoints"));
  EXPECT_TRUE(fs::is_empty(dir + "/checkpoints"));
}

}  // namespace
}  // namespace infllm::train
