// End to end through the real `infllm` executable: training learns, resume is bit-for-bit,
// signals checkpoint and stop, non-finite runs stop with a clear message, eval and generate
// read checkpoints, and a model pretrained dense keeps training smoothly when finetuned sparse.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/device.h"
#include "tests/train/infllm_cli.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"

namespace infllm::train {
namespace {

using testing::fresh_dir;
using testing::logged;
using testing::Outcome;
using testing::run;

namespace fs = std::filesystem;

std::string train_args(const std::string& dir, const std::string& extra = "") {
  return "train tests/train/recipes/tiny.yaml train.out_dir=" + dir + " " + extra;
}

// Every tensor of the newest checkpoint of a run, by name.
std::map<std::string, std::vector<float>> final_weights(const std::string& dir) {
  CheckpointState state = load_checkpoint(*latest_checkpoint(dir + "/checkpoints"));
  std::map<std::string, std::vector<float>> weights;
  for (auto& [name, tensor] : state.tensors) weights[name] = tensor.to_vector<float>();
  return weights;
}

TEST(Training, LossFallsAndTheRunFolderHasEverything) {
  std::string dir = fresh_dir("learns");
  Outcome out = run(train_args(dir, "train.steps=24 checkpoint.every=12 train.eval_every=12"));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  std::vector<double> loss = logged(dir, "loss");
  ASSERT_EQ(loss.size(), 24u) << out.output;
  EXPECT_LT(loss.back(), loss.front() - 1.0) << "the loss should fall from ~5.5 (uniform bytes)";
  EXPECT_EQ(logged(dir, "val_loss").size(), 2u);
  EXPECT_TRUE(fs::exists(dir + "/recipe.yaml"));
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/step_00000012.h5"));
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/step_00000024.h5"));
  bool has_events = false;
  for (auto& f : fs::directory_iterator(dir))
    has_events |= f.path().filename().string().rfind("events.out.tfevents", 0) == 0;
  EXPECT_TRUE(has_events);
}

TEST(Training, ResumeContinuesBitForBit) {
  std::string straight = fresh_dir("straight"), split = fresh_dir("split");
  ASSERT_EQ(run(train_args(straight)).exit_code, 0);
  Outcome first = run(train_args(split, "train.steps=8 checkpoint.every=4"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // Drop the step-8 checkpoint so --resume starts from step 4 and redoes 5..8.
  fs::remove(split + "/checkpoints/step_00000008.h5");
  Outcome resumed = run(train_args(split, "--resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  auto a = final_weights(straight), b = final_weights(split);
  ASSERT_EQ(a.size(), b.size());
  for (auto& [name, values] : a) EXPECT_EQ(values, b[name]) << name << " differs after resume";
  EXPECT_EQ(logged(straight, "loss"), logged(split, "loss"));
}

// Starts a long run, waits until it logged a step, sends SIGTERM; returns the exit status.
int terminate_running_training(const std::string& dir, std::vector<std::string> extra) {
  std::vector<std::string> args = {"train",
                                   "tests/train/recipes/tiny.yaml",
                                   "train.out_dir=" + dir,
                                   "train.steps=100000",
                                   "checkpoint.every=0",
                                   "train.eval_every=0"};
  args.insert(args.end(), extra.begin(), extra.end());
  pid_t child = testing::start(args);
  for (int i = 0; i < 1200 && logged(dir, "loss").empty(); ++i) usleep(50000);
  EXPECT_FALSE(logged(dir, "loss").empty()) << "the run never logged a step";
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  return status;
}

TEST(Training, SigtermSavesACheckpointAndStopsCleanly) {
  std::string dir = fresh_dir("sigterm");
  int status = terminate_running_training(dir, {});
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto latest = latest_checkpoint(dir + "/checkpoints");
  ASSERT_TRUE(latest.has_value()) << "no checkpoint written on SIGTERM";
  EXPECT_GT(load_checkpoint(*latest).step, 0);
}

TEST(Training, NonFiniteStepsAreSkippedThenTheRunStops) {
  std::string dir = fresh_dir("nonfinite");
  Outcome out = run(train_args(dir,
                               "optim.lr=1e30 optim.grad_clip=0 train.max_bad_steps=2 "
                               "train.steps=50 schedule.warmup_steps=0"));
  EXPECT_EQ(out.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("non-finite"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("train.max_bad_steps"), std::string::npos) << out.output;
}

TEST(Training, EvalAndGenerateReadTheCheckpoint) {
  std::string dir = fresh_dir("evalgen");
  ASSERT_EQ(run(train_args(dir)).exit_code, 0);
  Outcome eval = run("eval " + dir + "/checkpoints/latest --windows 4 --device cpu");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("\"perplexity\""), std::string::npos) << eval.output;
  Outcome gen =
      run("generate " + dir + "/checkpoints/latest --prompt \"The \" --tokens 20 --device cpu");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  EXPECT_EQ(gen.output.rfind("The ", 0), 0u) << gen.output;
  EXPECT_GT(gen.output.size(), 4u);
}

TEST(Training, BadRecipesAndArgumentsAreClearErrors) {
  Outcome typo = run(train_args(fresh_dir("typo"), "model.n_head=4"));
  EXPECT_EQ(typo.exit_code, 1);
  EXPECT_NE(typo.output.find("model.n_heads"), std::string::npos) << typo.output;
  Outcome missing = run("eval /nonexistent/ckpt.h5");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("/nonexistent/ckpt.h5"), std::string::npos) << missing.output;
  Outcome unknown = run("frobnicate");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_EQ(run("--help").exit_code, 0);
  EXPECT_EQ(run("train --help").exit_code, 0);
}

TEST(Training, CpuAndGpuRunsOfOneRecipeAgree) {
  // Same seed -> identical initial weights on both devices (Philox), the same batches; the GPU
  // computes in bf16, so the loss curves agree to bf16 tolerance, not bitwise.
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU on this machine (CUDA tests need one)";
  std::string cpu = fresh_dir("parity-cpu"), gpu = fresh_dir("parity-gpu");
  const std::string shape =  // head_dim 64: the CUDA attention kernels take 64 or 128
      "model.d_model=128 model.n_heads=2 model.ffn_hidden=256 train.steps=6 train.eval_every=0 ";
  Outcome a = run(train_args(cpu, shape + "train.device=cpu"));
  Outcome b = run(train_args(gpu, shape + "train.device=cuda"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  std::vector<double> la = logged(cpu, "loss"), lb = logged(gpu, "loss");
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_NEAR(lb[i], la[i], 0.02 * la[i]) << "step " << i + 1;
  }
}

// N ranks (every visible GPU) with batch B see exactly the windows one rank sees with batch B and
// grad_accum N - and with batch N x B: the loader deals windows to ranks round-robin - so both
// data-parallel reductions must reproduce the single-GPU run: the same losses up to f32
// summation order. The N-rank ZeRO checkpoint (unsharded on disk) then resumes on one GPU.
TEST(DataParallel, RanksReproduceOneRankWithGradientAccumulation) {
  const int gpus = cuda_device_count();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs; this machine has " << gpus;
  const std::string shape =
      "model.d_model=128 model.n_heads=2 model.ffn_hidden=256 train.device=cuda train.steps=20 "
      "train.eval_every=0 data.batch_size=2 checkpoint.every=10 ";
  const std::string nproc = "--nproc " + std::to_string(gpus);
  std::string one = fresh_dir("dp-one"), all = fresh_dir("dp-all"), zero = fresh_dir("dp-zero");
  Outcome a = run(train_args(one, shape + "data.grad_accum=" + std::to_string(gpus)));
  Outcome b = run(train_args(all, shape + nproc));
  Outcome c = run(train_args(zero, shape + "distributed.zero=1 " + nproc));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const std::string ranks = std::to_string(gpus) + " ranks";
  EXPECT_NE(c.output.find("data parallel over " + ranks), std::string::npos) << c.output;
  std::vector<double> la = logged(one, "loss"), lb = logged(all, "loss"), lc = logged(zero, "loss");
  ASSERT_EQ(la.size(), 20u);
  ASSERT_EQ(lb.size(), la.size());
  ASSERT_EQ(lc.size(), la.size());
  EXPECT_NEAR(lb[0], la[0], 1e-5 * la[0]);  // same weights, same windows: only the mean's order
  for (size_t i = 0; i < la.size(); ++i) {
    // bf16 compute: rounding differences of the summation order grow a little over the steps.
    EXPECT_NEAR(lb[i], la[i], 1e-2 * la[i]) << "all-reduce, step " << i + 1;
    EXPECT_NEAR(lc[i], la[i], 1e-2 * la[i]) << "ZeRO-1, step " << i + 1;
  }
  EXPECT_EQ(logged(all, "comm_exposed_ms").size(), la.size());
  Outcome resumed = run(train_args(zero, shape + "train.steps=22 --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("written by " + ranks), std::string::npos) << resumed.output;
  EXPECT_EQ(logged(zero, "loss").size(), 22u);
}

// SIGTERM to the launcher reaches every rank; they agree on the step to stop at, rank 0 writes
// one checkpoint, and the launcher reports the signal.
TEST(DataParallel, SigtermToTheLauncherCheckpointsOnceAndStopsEveryRank) {
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 GPUs; this machine has " << cuda_device_count();
  std::string dir = fresh_dir("dp-sigterm");
  int status =
      terminate_running_training(dir, {"model.d_model=128", "model.n_heads=2", "train.device=cuda",
                                       "--nproc", std::to_string(cuda_device_count())});
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  int checkpoints = 0;
  for (const auto& entry : fs::directory_iterator(dir + "/checkpoints"))
    checkpoints += entry.path().extension() == ".h5";
  EXPECT_EQ(checkpoints, 1);
}

TEST(Finetune, SparseFinetuneOfADensePretrainedModelContinuesSmoothly) {
  // Pretrain dense at T = 256, then finetune the same weights with the sparse path at the same
  // length, where each token sees 8 of 16 blocks of 16 tokens.
  std::string pretrain = fresh_dir("pretrain"), finetune = fresh_dir("finetune");
  const std::string sparse =
      "attention.kernel_size=8 attention.kernel_stride=4 attention.block_size=16 "
      "attention.window_size=64 attention.topk=8 data.seq_len=256 data.batch_size=2 ";
  Outcome dense_run = run(train_args(pretrain, sparse + "attention.mode=dense train.steps=60 "
                                                        "checkpoint.every=60 train.eval_every=0"));
  ASSERT_EQ(dense_run.exit_code, 0) << dense_run.output;
  Outcome sparse_run =
      run(train_args(finetune, sparse +
                                   "attention.mode=sparse train.steps=10 "
                                   "train.init_from=" +
                                   pretrain +
                                   "/checkpoints/latest "
                                   "optim.lr=1e-3 schedule.warmup_steps=2 train.eval_every=0"));
  ASSERT_EQ(sparse_run.exit_code, 0) << sparse_run.output;
  std::vector<double> dense_loss = logged(pretrain, "loss"), sparse_loss = logged(finetune, "loss");
  double last_dense = (dense_loss[57] + dense_loss[58] + dense_loss[59]) / 3;
  double first_sparse = (sparse_loss[0] + sparse_loss[1] + sparse_loss[2]) / 3;
  // A restart from scratch would be at ~5.5; a smooth switch stays near the dense loss.
  EXPECT_LT(first_sparse, last_dense * 1.10)
      << "dense " << last_dense << " sparse " << first_sparse;
  // The same checkpoint evaluates through both paths.
  std::string ckpt = pretrain + "/checkpoints/latest --windows 4 --seq-len 256 --device cpu";
  Outcome eval_dense = run("eval " + ckpt + " --attention dense");
  Outcome eval_sparse = run("eval " + ckpt + " --attention sparse");
  ASSERT_EQ(eval_dense.exit_code, 0) << eval_dense.output;
  ASSERT_EQ(eval_sparse.exit_code, 0) << eval_sparse.output;
  EXPECT_NE(eval_sparse.output.find("\"attention\": \"sparse\""), std::string::npos);
  // The CPU path's choice is the exact reference's; the field reports it for every sparse call.
  Outcome checked = run("eval " + ckpt + " --attention sparse --selection-agreement");
  ASSERT_EQ(checked.exit_code, 0) << checked.output;
  EXPECT_NE(checked.output.find("\"selection_agreement\": 1.000000"), std::string::npos)
      << checked.output;
  EXPECT_EQ(eval_dense.output.find("selection_agreement"), std::string::npos);
}

}  // namespace
}  // namespace infllm::train
