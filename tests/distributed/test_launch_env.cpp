// Launch environment detection for torchrun-style, Slurm and OpenMPI variables, and each error.
#include <gtest/gtest.h>

#include <map>

#include "core/error.h"
#include "distributed/launch_env.h"

namespace infllm::distributed {
namespace {

EnvReader map_reader(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Runs detection and returns the error text; fails the test if nothing was thrown.
std::string detect_error(std::map<std::string, std::string> vars) {
  try {
    detect_launch_env(map_reader(std::move(vars)));
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an infllm::Error";
  return "";
}

TEST(LaunchEnv, NothingSetIsOneProcess) {
  LaunchEnv env = detect_launch_env(map_reader({{"HOME", "/root"}}));
  EXPECT_EQ(env.launcher, "single");
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
}

TEST(LaunchEnv, Torchrun) {
  LaunchEnv env = detect_launch_env(map_reader({{"RANK", "5"},
                                                {"WORLD_SIZE", "8"},
                                                {"LOCAL_RANK", "1"},
                                                {"MASTER_ADDR", "node7"},
                                                {"MASTER_PORT", "29500"}}));
  EXPECT_EQ(env.launcher, "torchrun");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, "node7");
  EXPECT_EQ(env.master_port, 29500);
}

TEST(LaunchEnv, TorchrunSingleProcessNeedsNoMaster) {
  LaunchEnv env = detect_launch_env(map_reader({{"RANK", "0"}, {"WORLD_SIZE", "1"}}));
  EXPECT_EQ(env.world_size, 1);
  EXPECT_TRUE(env.master_addr.empty());
}

TEST(LaunchEnv, TorchrunTakesPrecedenceOverSlurm) {
  LaunchEnv env = detect_launch_env(map_reader({{"RANK", "1"},
                                                {"WORLD_SIZE", "2"},
                                                {"LOCAL_RANK", "1"},
                                                {"MASTER_ADDR", "127.0.0.1"},
                                                {"MASTER_PORT", "1234"},
                                                {"SLURM_PROCID", "0"},
                                                {"SLURM_NTASKS", "1"}}));
  EXPECT_EQ(env.launcher, "torchrun");
  EXPECT_EQ(env.rank, 1);
}

TEST(LaunchEnv, TorchrunErrorsNameTheVariable) {
  std::map<std::string, std::string> good = {{"RANK", "1"},
                                             {"WORLD_SIZE", "4"},
                                             {"LOCAL_RANK", "1"},
                                             {"MASTER_ADDR", "h"},
                                             {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& key, const std::string& value) {
    auto vars = good;
    vars[key] = value;
    return vars;
  };
  auto without = [&](const std::string& key) {
    auto vars = good;
    vars.erase(key);
    return vars;
  };
  EXPECT_NE(detect_error(with("RANK", "one")).find("RANK='one' is not an integer"),
            std::string::npos);
  EXPECT_NE(detect_error(with("RANK", "2x")).find("RANK='2x'"), std::string::npos);
  EXPECT_NE(detect_error(with("WORLD_SIZE", "")).find("WORLD_SIZE=''"), std::string::npos);
  EXPECT_NE(detect_error(with("RANK", "4")).find("RANK=4 is outside [0, WORLD_SIZE=4)"),
            std::string::npos);
  EXPECT_NE(detect_error(with("RANK", "-1")).find("RANK=-1"), std::string::npos);
  EXPECT_NE(detect_error(with("WORLD_SIZE", "0")).find("WORLD_SIZE=0 must be at least 1"),
            std::string::npos);
  EXPECT_NE(detect_error(with("LOCAL_RANK", "9")).find("LOCAL_RANK=9"), std::string::npos);
  EXPECT_NE(detect_error(without("WORLD_SIZE")).find("WORLD_SIZE is not set"), std::string::npos);
  EXPECT_NE(detect_error(without("LOCAL_RANK")).find("LOCAL_RANK is not set"), std::string::npos);
  EXPECT_NE(detect_error(without("MASTER_ADDR")).find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(detect_error(without("MASTER_PORT")).find("MASTER_PORT is not set"), std::string::npos);
  EXPECT_NE(detect_error(with("MASTER_PORT", "70000")).find("MASTER_PORT=70000 is not a TCP port"),
            std::string::npos);
  EXPECT_NE(detect_error(with("MASTER_PORT", "0")).find("MASTER_PORT=0"), std::string::npos);
  EXPECT_NE(detect_error(with("MASTER_PORT", "http")).find("MASTER_PORT='http'"),
            std::string::npos);
}

TEST(LaunchEnv, Slurm) {
  LaunchEnv env = detect_launch_env(map_reader({{"SLURM_PROCID", "6"},
                                                {"SLURM_NTASKS", "8"},
                                                {"SLURM_LOCALID", "2"},
                                                {"SLURM_JOB_NODELIST", "gpu[03-04]"},
                                                {"SLURM_JOB_ID", "123456"}}));
  EXPECT_EQ(env.launcher, "slurm");
  EXPECT_EQ(env.rank, 6);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 2);
  EXPECT_EQ(env.master_addr, "gpu03");
  EXPECT_EQ(env.master_port, slurm_default_port(123456));
  EXPECT_GE(env.master_port, 10000);
  EXPECT_LT(env.master_port, 30000);
}

TEST(LaunchEnv, SlurmPrefersStepNodesAndExplicitMaster) {
  LaunchEnv step = detect_launch_env(map_reader({{"SLURM_PROCID", "0"},
                                                 {"SLURM_NTASKS", "2"},
                                                 {"SLURM_LOCALID", "0"},
                                                 {"SLURM_STEP_NODELIST", "b[7-8]"},
                                                 {"SLURM_JOB_NODELIST", "a[1-9]"},
                                                 {"SLURM_JOB_ID", "5"}}));
  EXPECT_EQ(step.master_addr, "b7");
  LaunchEnv legacy = detect_launch_env(map_reader({{"SLURM_PROCID", "0"},
                                                   {"SLURM_NTASKS", "2"},
                                                   {"SLURM_LOCALID", "0"},
                                                   {"SLURM_NODELIST", "node-a,node-b"},
                                                   {"SLURM_JOB_ID", "5"}}));
  EXPECT_EQ(legacy.master_addr, "node-a");
  LaunchEnv explicit_master = detect_launch_env(map_reader({{"SLURM_PROCID", "1"},
                                                            {"SLURM_NTASKS", "2"},
                                                            {"SLURM_LOCALID", "1"},
                                                            {"SLURM_NODELIST", "n1"},
                                                            {"MASTER_ADDR", "10.0.0.9"},
                                                            {"MASTER_PORT", "4000"}}));
  EXPECT_EQ(explicit_master.master_addr, "10.0.0.9");
  EXPECT_EQ(explicit_master.master_port, 4000);
}

TEST(LaunchEnv, SlurmErrorsNameTheVariable) {
  std::map<std::string, std::string> good = {{"SLURM_PROCID", "1"},
                                             {"SLURM_NTASKS", "2"},
                                             {"SLURM_LOCALID", "0"},
                                             {"SLURM_JOB_NODELIST", "n[1-2]"},
                                             {"SLURM_JOB_ID", "77"}};
  auto vars = good;
  vars["SLURM_PROCID"] = "2";
  EXPECT_NE(detect_error(vars).find("SLURM_PROCID=2 is outside [0, SLURM_NTASKS=2)"),
            std::string::npos);
  vars = good;
  vars.erase("SLURM_NTASKS");
  EXPECT_NE(detect_error(vars).find("SLURM_NTASKS is not set"), std::string::npos);
  vars = good;
  vars["SLURM_LOCALID"] = "x";
  EXPECT_NE(detect_error(vars).find("SLURM_LOCALID='x'"), std::string::npos);
  vars = good;
  vars.erase("SLURM_JOB_NODELIST");
  EXPECT_NE(detect_error(vars).find("SLURM_JOB_NODELIST"), std::string::npos);
  vars = good;
  vars.erase("SLURM_JOB_ID");
  EXPECT_NE(detect_error(vars).find("SLURM_JOB_ID is not set"), std::string::npos);
  vars = good;
  vars["MASTER_PORT"] = "99999";
  EXPECT_NE(detect_error(vars).find("MASTER_PORT=99999"), std::string::npos);
  vars = good;
  vars["SLURM_JOB_NODELIST"] = "n[1-";
  EXPECT_NE(detect_error(vars).find("unmatched '['"), std::string::npos);
}

TEST(LaunchEnv, OpenMpi) {
  LaunchEnv env = detect_launch_env(map_reader({{"OMPI_COMM_WORLD_RANK", "3"},
                                                {"OMPI_COMM_WORLD_SIZE", "4"},
                                                {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
                                                {"MASTER_ADDR", "head"},
                                                {"MASTER_PORT", "29400"},
                                                {"SLURM_PROCID", "0"}}));
  EXPECT_EQ(env.launcher, "openmpi");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 3);
  EXPECT_EQ(env.master_addr, "head");
  EXPECT_EQ(env.master_port, 29400);
}

TEST(LaunchEnv, OpenMpiErrorsNameTheVariable) {
  std::map<std::string, std::string> good = {{"OMPI_COMM_WORLD_RANK", "0"},
                                             {"OMPI_COMM_WORLD_SIZE", "2"},
                                             {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                             {"MASTER_ADDR", "head"},
                                             {"MASTER_PORT", "29400"}};
  auto vars = good;
  vars.erase("MASTER_ADDR");
  EXPECT_NE(detect_error(vars).find("MASTER_ADDR is not set"), std::string::npos);
  vars = good;
  vars.erase("MASTER_PORT");
  EXPECT_NE(detect_error(vars).find("MASTER_PORT is not set"), std::string::npos);
  vars = good;
  vars["OMPI_COMM_WORLD_SIZE"] = "two";
  EXPECT_NE(detect_error(vars).find("OMPI_COMM_WORLD_SIZE='two'"), std::string::npos);
  vars = good;
  vars.erase("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_NE(detect_error(vars).find("OMPI_COMM_WORLD_LOCAL_RANK is not set"), std::string::npos);
}

TEST(SlurmNodelist, Expands) {
  using List = std::vector<std::string>;
  EXPECT_EQ(expand_slurm_nodelist("gpu[01-04,07]"),
            (List{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"}));
  EXPECT_EQ(expand_slurm_nodelist("node-a,node-b"), (List{"node-a", "node-b"}));
  EXPECT_EQ(expand_slurm_nodelist("solo"), (List{"solo"}));
  EXPECT_EQ(expand_slurm_nodelist("a[8-10],b1"), (List{"a8", "a9", "a10", "b1"}));
  EXPECT_EQ(expand_slurm_nodelist("gpu[098-101]"), (List{"gpu098", "gpu099", "gpu100", "gpu101"}));
  EXPECT_EQ(expand_slurm_nodelist("r[1-2]n[1,3]"), (List{"r1n1", "r1n3", "r2n1", "r2n3"}));
  EXPECT_EQ(expand_slurm_nodelist("x[5]-ib"), (List{"x5-ib"}));
}

TEST(SlurmNodelist, RejectsMalformedLists) {
  for (const char* bad : {"gpu[01-04", "gpu01]", "gpu[04-01]", "gpu[a-b]", "a,,b", "gpu[]"})
    EXPECT_THROW(expand_slurm_nodelist(bad), Error) << bad;
}

}  // namespace
}  // namespace infllm::distributed
