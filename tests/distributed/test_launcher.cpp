// The local launcher with real child programs (/bin/sh scripts).
#include <gtest/gtest.h>

#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "distributed/launcher.h"
#include "fork_helpers.h"

namespace infllm::distributed {
namespace {

using Seconds = std::chrono::duration<double>;

using testing::TempDir;

std::string read_line(const TempDir& dir, const std::string& name) {
  std::ifstream in(dir.path + "/" + name);
  std::string text;
  std::getline(in, text);
  return text;
}

// sh -c SCRIPT sh DIR: the script sees the temp folder as $1.
std::vector<std::string> shell(const std::string& script, const TempDir& dir) {
  return {"/bin/sh", "-c", script, "sh", dir.path};
}

struct Launched {
  int code;
  double seconds;
  std::string report;
};

Launched launch(int nproc, const std::vector<std::string>& argv, double grace_seconds = 2) {
  LocalLaunchOptions options;
  options.kill_grace = std::chrono::milliseconds(static_cast<int>(grace_seconds * 1000));
  std::string report;
  options.report = [&](const std::string& line) { report += line + "\n"; };
  auto start = std::chrono::steady_clock::now();
  int code = launch_local(nproc, argv, options);
  return {code, Seconds(std::chrono::steady_clock::now() - start).count(), report};
}

TEST(Launcher, AllRanksSucceed) {
  TempDir dir;
  Launched run =
      launch(3, shell("test \"$LOCAL_RANK\" = \"$RANK\" && test \"$WORLD_SIZE\" = 3 "
                      "&& test \"$MASTER_ADDR\" = 127.0.0.1 && test \"$MASTER_PORT\" -gt 0 "
                      "&& test \"$NCCL_NVLS_ENABLE\" = 0 "
                      "&& echo \"$RANK $WORLD_SIZE $MASTER_PORT\" > \"$1/rank$RANK\"",
                      dir));
  EXPECT_EQ(run.code, 0) << run.report;
  std::string port = read_line(dir, "rank0").substr(4);
  for (int rank = 0; rank < 3; ++rank)
    EXPECT_EQ(read_line(dir, "rank" + std::to_string(rank)), std::to_string(rank) + " 3 " + port);
}

TEST(Launcher, OneFailureStopsTheOthers) {
  TempDir dir;
  Launched run = launch(3, shell("if [ \"$RANK\" = 1 ]; then sleep 0.2; exit 3; fi; sleep 30; "
                                 "touch \"$1/survived$RANK\"",
                                 dir));
  EXPECT_EQ(run.code, 3);
  EXPECT_LT(run.seconds, 10.0) << "the other ranks were not stopped";
  EXPECT_NE(run.report.find("rank 1 (pid"), std::string::npos) << run.report;
  EXPECT_NE(run.report.find("exited with status 3"), std::string::npos) << run.report;
  EXPECT_NE(run.report.find("rank 0 was killed by signal 15"), std::string::npos) << run.report;
  EXPECT_FALSE(std::filesystem::exists(dir.path + "/survived0"));
  EXPECT_FALSE(std::filesystem::exists(dir.path + "/survived2"));
}

TEST(Launcher, RanksIgnoringSigtermAreKilledAfterTheGrace) {
  TempDir dir;
  Launched run =
      launch(2, shell("if [ \"$RANK\" = 0 ]; then exit 5; fi; trap '' TERM; sleep 30", dir),
             /*grace_seconds=*/0.5);
  EXPECT_EQ(run.code, 5);
  EXPECT_GE(run.seconds, 0.5);
  EXPECT_LT(run.seconds, 10.0);
  EXPECT_NE(run.report.find("SIGKILL"), std::string::npos) << run.report;
}

TEST(Launcher, RankKilledBySignalIsReported) {
  TempDir dir;
  Launched run = launch(2, shell("if [ \"$RANK\" = 1 ]; then kill -9 $$; fi; sleep 30", dir));
  EXPECT_EQ(run.code, 128 + 9);
  EXPECT_NE(run.report.find("rank 1 (pid"), std::string::npos) << run.report;
  EXPECT_NE(run.report.find("killed by signal 9"), std::string::npos) << run.report;
}

TEST(Launcher, MissingProgramIsReported) {
  Launched run = launch(2, {"/nonexistent/infllm-program"});
  EXPECT_EQ(run.code, 127);
  EXPECT_NE(run.report.find("could not be started"), std::string::npos) << run.report;
}

TEST(Launcher, ForwardsSigtermToEveryRank) {
  TempDir dir;
  // The launcher runs in a child process, which this test then sends SIGTERM.
  testing::Child launcher = testing::fork_child([&]() -> std::string {
    int code = launch_local(
        2, shell("trap 'echo stopped > \"$1/term$RANK\"; exit 0' TERM; touch \"$1/up$RANK\"; "
                 "while true; do sleep 0.05; done",
                 dir));
    return code == 128 + SIGTERM ? "" : "launcher returned " + std::to_string(code);
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (
      !(std::filesystem::exists(dir.path + "/up0") && std::filesystem::exists(dir.path + "/up1"))) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "ranks did not start";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(launcher.pid, SIGTERM);
  testing::ChildResult result = testing::wait_child(launcher);
  EXPECT_EQ(result.exit_code, 0) << result.message;
  EXPECT_EQ(read_line(dir, "term0"), "stopped");
  EXPECT_EQ(read_line(dir, "term1"), "stopped");
}

TEST(Launcher, RejectsBadArguments) {
  EXPECT_THROW(launch_local(0, {"/bin/true"}), Error);
  EXPECT_THROW(launch_local(2, {}), Error);
}

}  // namespace
}  // namespace infllm::distributed
