// Checkpoint faults through the real `infllm` executable on a tiny CPU recipe: a damaged newest
// checkpoint is refused by --resume (naming the file, the tensor and the newest good one, and
// changing nothing), --resume-last-good continues from the newest good one bit for bit; eval
// and generate refuse a damaged weight; a run whose state turned non-finite stops without
// writing it; a full disk mid-run is one error that keeps the earlier checkpoints; and
// train.init_from is strict unless train.init_partial.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/hdf5_handle.h"
#include "train/checkpoint.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using data::H5Handle;

struct Outcome {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

Outcome run(const std::string& args) {
  const std::string command = std::string(INFLLM_BINARY) + " " + args + " 2>&1";
  Outcome outcome;
  FILE* pipe = popen(command.c_str(), "r");
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe))
    outcome.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return outcome;
}

std::string fresh_dir(const std::string& name) {
  const std::string dir = "/tmp/infllm-tests/ckpt-" + name + "-" + std::to_string(getpid());
  fs::remove_all(dir);
  return dir;
}

std::string train_args(const std::string& dir, const std::string& extra = "") {
  return "train tests/train/recipes/tiny.yaml train.eval_every=0 train.out_dir=" + dir + " " +
         extra;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_contains(const Outcome& outcome, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts)
    EXPECT_NE(outcome.output.find(part), std::string::npos) << "lacks \"" << part << "\":\n"
                                                            << outcome.output;
}

// Opens a checkpoint for writing through HDF5 and hands the file to `edit`.
template <class Edit>
void edit_file(const std::string& path, Edit&& edit) {
  std::lock_guard lock(data::hdf5_mutex());
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  edit(file.get());
}

// The name of the first tensor of a checkpoint under `prefix`.
std::string first_tensor(const std::string& path, const std::string& prefix) {
  for (const auto& [name, tensor] : load_checkpoint(path).tensors)
    if (name.starts_with(prefix)) return name;
  ADD_FAILURE() << "no tensor under " << prefix << " in " << path;
  return "";
}

// Flips one bit in the middle of a tensor's bytes on disk.
void flip_bit_in(const std::string& path, const std::string& tensor) {
  haddr_t offset = HADDR_UNDEF;
  edit_file(path, [&](hid_t file) {
    H5Handle dataset(H5Dopen2(file, tensor.c_str(), H5P_DEFAULT));
    offset = H5Dget_offset(dataset.get()) + H5Dget_storage_size(dataset.get()) / 2;
  });
  std::fstream bytes(path, std::ios::in | std::ios::out | std::ios::binary);
  bytes.seekg(std::streamoff(offset));
  char byte = 0;
  bytes.read(&byte, 1);
  byte = char(byte ^ 0x04);
  bytes.seekp(std::streamoff(offset));
  bytes.write(&byte, 1);
}

TEST(CheckpointResume, DamagedNewestIsRefusedAndLastGoodContinuesBitForBit) {
  const std::string straight = fresh_dir("straight"), split = fresh_dir("split");
  ASSERT_EQ(run(train_args(straight, "train.steps=8 checkpoint.every=4")).exit_code, 0);
  const Outcome first = run(train_args(split, "train.steps=8 checkpoint.every=4"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string folder = split + "/checkpoints";
  const std::string newest = folder + "/step_00000008.h5", good = folder + "/step_00000004.h5";
  // eval and generate read (and verify) the master weights: a flipped bit there is refused.
  const std::string copy = split + "/copy.h5", weight = first_tensor(newest, "optim/master/");
  fs::copy_file(newest, copy);
  flip_bit_in(copy, weight);
  for (const std::string& command : {"eval " + copy + " --windows 2 --device cpu",
                                     "generate " + copy + " --tokens 4 --device cpu"}) {
    const Outcome refused_load = run(command);
    EXPECT_EQ(refused_load.exit_code, 1) << refused_load.output;
    expect_contains(refused_load, {copy, "tensor '" + weight + "'", "does not match its checksum"});
  }

  const std::string moment = first_tensor(newest, "optim/exp_avg_sq/");
  flip_bit_in(newest, moment);

  const std::vector<std::string> before = files_in(folder);
  const Outcome refused = run(train_args(split, "train.steps=8 checkpoint.every=4 --resume"));
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  expect_contains(refused, {newest, "tensor '" + moment + "'", "does not match its checksum",
                            "newest checkpoint that verifies is " + good, "--resume-last-good",
                            "Nothing in the run folder was changed"});
  EXPECT_EQ(files_in(folder), before) << "a refused resume must change nothing";

  const Outcome resumed =
      run(train_args(split, "train.steps=8 checkpoint.every=4 --resume-last-good"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  expect_contains(resumed, {"resumed from " + good, "renamed the damaged " + newest});
  EXPECT_TRUE(fs::exists(newest + ".damaged")) << "the damaged file is kept";
  EXPECT_EQ(verify_checkpoint(newest), std::nullopt) << "the new step-8 checkpoint verifies";
  const CheckpointState a = load_checkpoint(straight + "/checkpoints/step_00000008.h5");
  const CheckpointState b = load_checkpoint(newest);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].second.to_vector<float>(), b.tensors[i].second.to_vector<float>())
        << a.tensors[i].first << " differs after --resume-last-good";
  }
}

TEST(CheckpointResume, NonFiniteStateStopsTheRunWithoutWritingIt) {
  // A format_version 1 checkpoint (no checksums: loaded unverified) whose second moments are
  // NaN: the first update makes the weights NaN, and the next checkpoint must not be written.
  const std::string dir = fresh_dir("nan");
  ASSERT_EQ(run(train_args(dir, "train.steps=4 checkpoint.every=4")).exit_code, 0);
  const std::string path = dir + "/checkpoints/step_00000004.h5";
  std::vector<std::string> moments;
  for (const auto& [name, tensor] : load_checkpoint(path).tensors)
    if (name.starts_with("optim/exp_avg_sq/")) moments.push_back(name);
  edit_file(path, [&](hid_t file) {
    const int64_t version = 1;
    H5Handle attribute(H5Aopen(file, "format_version", H5P_DEFAULT));
    ASSERT_GE(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &version), 0);
    for (const std::string& name : moments) {
      H5Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
      std::vector<float> nan(H5Dget_storage_size(dataset.get()) / 4, NAN);
      ASSERT_GE(
          H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, nan.data()), 0);
    }
  });
  const Outcome out = run(train_args(dir, "train.steps=8 checkpoint.every=4 --resume"));
  EXPECT_NE(out.exit_code, 0) << out.output;
  expect_contains(
      out, {"format_version 1", "refusing to write", "optim/master/", "The run stops at step 8"});
  EXPECT_EQ(files_in(dir + "/checkpoints"), std::vector<std::string>{"step_00000004.h5"});
}

TEST(CheckpointResume, DiskFullDuringARunIsOneErrorAndKeepsTheEarlierCheckpoints) {
  const std::string dir = fresh_dir("diskfull");
  ASSERT_EQ(run(train_args(dir, "train.steps=2 checkpoint.every=2")).exit_code, 0);
  // The step-4 checkpoint (~0.4 MB) exceeds a 100 KB file-size limit; the logs do not.
  std::vector<std::string> args = {INFLLM_BINARY,
                                   "train",
                                   "tests/train/recipes/tiny.yaml",
                                   "train.eval_every=0",
                                   "train.out_dir=" + dir,
                                   "train.steps=4",
                                   "checkpoint.every=2",
                                   "--resume"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const std::string log = dir + "/diskfull.log";
  const pid_t child = fork();
  if (child == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDERR_FILENO);
    ::signal(SIGXFSZ, SIG_IGN);  // kept across exec: write() fails with EFBIG, as on a full disk
    const rlimit limit{100 << 10, 100 << 10};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    ::execv(INFLLM_BINARY, argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << "the run crashed with signal " << WTERMSIG(status) << "\n"
                                 << output;
  EXPECT_EQ(WEXITSTATUS(status), 1) << output;
  EXPECT_NE(output.find("step_00000004.h5"), std::string::npos) << output;
  EXPECT_NE(output.find("disk full"), std::string::npos) << output;
  EXPECT_EQ(output.find("HDF5-DIAG"), std::string::npos) << output;
  EXPECT_EQ(files_in(dir + "/checkpoints"), std::vector<std::string>{"step_00000002.h5"});
  EXPECT_EQ(verify_checkpoint(dir + "/checkpoints/step_00000002.h5"), std::nullopt);
}

TEST(CheckpointResume, InitFromIsStrictUnlessPartial) {
  const std::string pretrain = fresh_dir("pretrain");
  ASSERT_EQ(
      run(train_args(pretrain, "train.steps=2 checkpoint.every=2 model.n_layers=3")).exit_code, 0);
  const std::string from = "train.init_from=" + pretrain + "/checkpoints/latest train.steps=2 ";
  const Outcome fewer = run(train_args(fresh_dir("fewer"), from));
  EXPECT_EQ(fewer.exit_code, 1) << fewer.output;
  expect_contains(fewer, {"train.init_from", "0 missing", "unexpected: optim/master/blocks.2.",
                          "train.init_partial=true"});
  const Outcome tied = run(train_args(fresh_dir("tied"), from + "model.n_layers=3 "
                                                                "model.tie_embeddings=true"));
  EXPECT_EQ(tied.exit_code, 1) << tied.output;
  expect_contains(tied,
                  {"1 in the checkpoint but not the model", "unexpected: optim/master/head."});
  const Outcome partial = run(train_args(fresh_dir("partial"), from + "train.init_partial=true"));
  EXPECT_EQ(partial.exit_code, 0) << partial.output;
  expect_contains(partial, {"train.init_partial: loaded", "unexpected: optim/master/blocks.2."});
  const Outcome exact = run(train_args(fresh_dir("exact"), from + "model.n_layers=3"));
  EXPECT_EQ(exact.exit_code, 0) << exact.output;
  EXPECT_EQ(exact.output.find("train.init_partial: loaded"), std::string::npos) << exact.output;
}

}  // namespace
}  // namespace infllm::train
