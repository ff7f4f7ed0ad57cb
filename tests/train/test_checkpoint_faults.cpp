// Checkpoints under injected faults: truncation and flipped bits (in a weight, an AdamW moment,
// the metadata) are found and named on load; non-finite state is never written; pruning keeps
// the newest checkpoint that verifies; a full disk (a file-size limit) or a read-only folder
// is one clear error that leaves no temp file, keeps the earlier checkpoints and does not
// crash the process; loading weights is strict unless a partial load is asked for.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/ops.h"
#include "data/hdf5_handle.h"
#include "tests/data/test_util.h"
#include "tests/test_util.h"
#include "train/checkpoint.h"
#include "train/checksum.h"
#include "train/load_model.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using data::H5Handle;
using data::testing::TempDir;

// A trainer-shaped state: f32 master weights and both AdamW moments of two parameters.
CheckpointState trainer_state(int64_t step) {
  CheckpointState state;
  state.step = step;
  for (const char* kind : {"master", "exp_avg", "exp_avg_sq"}) {
    state.tensors.emplace_back(std::string("optim/") + kind + "/embedding.weight",
                               testing::random_normal({16, 8}, DType::f32));
    state.tensors.emplace_back(std::string("optim/") + kind + "/blocks.0.mlp.weight",
                               testing::random_normal({8, 8}, DType::f32));
  }
  state.strings["recipe"] = "model:\n  d_model: 8\n# marker-for-the-flip-test\n";
  state.integers["data_step"] = 7 * step;
  state.integers["optimizer_steps"] = step;
  state.numbers["loss"] = 2.5;
  return state;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// XORs one byte of the file at `offset` (a flipped bit on disk).
void flip_byte(const std::string& path, uint64_t offset, unsigned char mask = 0x10) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(std::streamoff(offset));
  char byte = 0;
  file.read(&byte, 1);
  byte = char(byte ^ mask);
  file.seekp(std::streamoff(offset));
  file.write(&byte, 1);
  ASSERT_TRUE(file.good()) << path;
}

// Where a dataset's bytes start in the file (contiguous layout).
uint64_t data_offset(const std::string& path, const std::string& dataset) {
  std::lock_guard lock(data::hdf5_mutex());
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  H5Handle set(H5Dopen2(file.get(), dataset.c_str(), H5P_DEFAULT));
  const haddr_t offset = H5Dget_offset(set.get());
  EXPECT_NE(offset, HADDR_UNDEF) << dataset;
  return offset;
}

// The message of the CheckpointDamaged that loading `path` throws ("" and a failure if none).
std::string damage_of(const std::string& path) {
  try {
    load_checkpoint(path);
  } catch (const CheckpointDamaged& error) {
    return error.what();
  } catch (const std::exception& error) {
    ADD_FAILURE() << "not a CheckpointDamaged: " << error.what();
    return "";
  }
  ADD_FAILURE() << path << " loaded although it was damaged";
  return "";
}

void expect_contains(const std::string& message, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "lacks \"" << part << "\": " << message;
}

// ---------------------------------------------------------------------------------------------
// Checksums

TEST(CheckpointFaults, Xxh64MatchesTheReferenceVectors) {
  // Published XXH64 values (seed 0), e.g. `xxhsum -H1`.
  EXPECT_EQ(xxh64("", 0), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(xxh64("abc", 3), 0x44BC2CF5AD770999ull);
  const std::string long_text = "Nobody inspects the spammish repetition";  // > 32 bytes
  EXPECT_EQ(xxh64(long_text.data(), long_text.size()), 0xFBCEA83C8A378BF1ull);
  EXPECT_EQ(checksum_text(0xFBCEA83C8A378BF1ull), "xxh64:fbcea83c8a378bf1");
  // Any split into updates gives the digest of the whole.
  std::vector<unsigned char> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 3);
  for (size_t piece : {1, 5, 31, 32, 33, 999}) {
    Xxh64 hash;
    for (size_t at = 0; at < bytes.size(); at += piece)
      hash.update(bytes.data() + at, std::min(piece, bytes.size() - at));
    EXPECT_EQ(hash.digest(), xxh64(bytes.data(), bytes.size())) << piece;
  }
}

TEST(CheckpointFaults, AWholeFileVerifies) {
  TempDir dir;
  const std::string path = dir.file("step_00000003.h5");
  save_checkpoint(path, trainer_state(3));
  EXPECT_EQ(verify_checkpoint(path), std::nullopt);
  EXPECT_EQ(load_checkpoint(path).step, 3);
}

// ---------------------------------------------------------------------------------------------
// Damage found and named

TEST(CheckpointFaults, TruncatedFileIsDamaged) {
  TempDir dir;
  const std::string path = dir.file("step_00000003.h5");
  save_checkpoint(path, trainer_state(3));
  const uintmax_t size = fs::file_size(path);
  for (uintmax_t keep : {size - 1, size / 2, uintmax_t(100), uintmax_t(0)}) {
    fs::resize_file(path, keep);
    expect_contains(damage_of(path), {path});
    const std::optional<std::string> problem = verify_checkpoint(path);
    ASSERT_TRUE(problem.has_value()) << keep;
    expect_contains(*problem, {path});
  }
}

TEST(CheckpointFaults, FlippedBitInAWeightOrAMomentIsNamed) {
  TempDir dir;
  for (const std::string name :
       {"optim/master/embedding.weight", "optim/exp_avg/blocks.0.mlp.weight",
        "optim/exp_avg_sq/embedding.weight"}) {
    const std::string path = dir.file("step_00000003.h5");
    save_checkpoint(path, trainer_state(3));
    flip_byte(path, data_offset(path, name) + 37);
    expect_contains(damage_of(path), {path, "tensor '" + name + "'", "does not match its checksum",
                                      "--resume-last-good"});
    const std::optional<std::string> problem = verify_checkpoint(path);
    ASSERT_TRUE(problem.has_value()) << name;
    expect_contains(*problem, {"tensor '" + name + "'"});
  }
}

TEST(CheckpointFaults, FlippedBitInTheMetadataIsNamed) {
  TempDir dir;
  const std::string path = dir.file("step_00000003.h5");
  // The recipe text lives in HDF5's global heap, which has no checksum of its own.
  save_checkpoint(path, trainer_state(3));
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t marker = bytes.find("marker-for-the-flip-test");
  ASSERT_NE(marker, std::string::npos);
  flip_byte(path, marker + 3, 0x01);
  expect_contains(damage_of(path), {path, "attribute 'recipe' does not match its checksum"});
  EXPECT_THROW(load_checkpoint_attributes(path), CheckpointDamaged);  // it reads no tensor

  // Values changed through HDF5 itself (well-formed, wrong): each key is named.
  const auto rewrite_integer = [&](const char* key, int64_t value) {
    save_checkpoint(path, trainer_state(3));
    std::lock_guard lock(data::hdf5_mutex());
    H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    H5Handle attribute(H5Aopen(file.get(), key, H5P_DEFAULT));
    ASSERT_GE(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value), 0);
  };
  rewrite_integer("step", 4);
  expect_contains(damage_of(path), {"attribute 'step' does not match its checksum"});
  rewrite_integer("data_step", 22);
  expect_contains(damage_of(path), {"attribute 'data_step' does not match its checksum"});

  save_checkpoint(path, trainer_state(3));
  {
    std::lock_guard lock(data::hdf5_mutex());
    H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(H5Ldelete(file.get(), "optim/exp_avg/embedding.weight", H5P_DEFAULT), 0);
  }
  expect_contains(damage_of(path), {"tensor 'optim/exp_avg/embedding.weight' is missing"});
  EXPECT_THROW(load_checkpoint_attributes(path), CheckpointDamaged);

  // A raw flip inside HDF5's own metadata (the root object header, which holds the integer
  // attributes) is caught by HDF5's metadata checksums: still damage, naming the file.
  save_checkpoint(path, trainer_state(3));
  std::ifstream again(path, std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  const int64_t data_step = 21;
  const size_t at = raw.find("data_step");
  ASSERT_NE(at, std::string::npos);
  const size_t value = raw.find(std::string(reinterpret_cast<const char*>(&data_step), 8), at);
  ASSERT_NE(value, std::string::npos);
  flip_byte(path, value, 0x02);
  expect_contains(damage_of(path), {path});
}

TEST(CheckpointFaults, UncheckedFormatVersion1StillLoadsWithAWarning) {
  TempDir dir;
  const std::string path = dir.file("step_00000003.h5");
  save_checkpoint(path, trainer_state(3));
  {
    std::lock_guard lock(data::hdf5_mutex());
    H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    H5Handle attribute(H5Aopen(file.get(), "format_version", H5P_DEFAULT));
    const int64_t version = 1;
    ASSERT_GE(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &version), 0);
  }
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(load_checkpoint(path).step, 3);
  expect_contains(::testing::internal::GetCapturedStderr(),
                  {path, "format_version 1", "without verification"});
}

// ---------------------------------------------------------------------------------------------
// Only finite state is written

TEST(CheckpointFaults, NonFiniteStateIsRefusedAndNothingWritten) {
  TempDir dir;
  const std::string path = dir.file("step_00000003.h5");
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity()};
  for (const char* name :
       {"optim/master/blocks.0.mlp.weight", "optim/exp_avg_sq/embedding.weight"}) {
    for (float bad : bad_values) {
      CheckpointState state = trainer_state(3);
      for (auto& [tensor_name, tensor] : state.tensors) {
        if (tensor_name == name) tensor.data<float>()[5] = bad;
      }
      const std::string message = infllm::testing::error_of([&] { save_checkpoint(path, state); });
      expect_contains(
          message, {path, std::string("tensor '") + name + "'", "element 5", "refusing to write"});
      EXPECT_TRUE(files_in(dir.path()).empty()) << "nothing may be written";
    }
  }
  CheckpointState state;  // bf16 and f64 too
  state.tensors.emplace_back("w", Tensor::from_vector<double>({1.0, -INFINITY}, {2}));
  expect_contains(infllm::testing::error_of([&] { save_checkpoint(path, state); }),
                  {"'w'", "element 1"});
  state.tensors = {{"w", Tensor::from_vector<bf16>({float_to_bf16(1.f), float_to_bf16(NAN)}, {2})}};
  expect_contains(infllm::testing::error_of([&] { save_checkpoint(path, state); }),
                  {"'w'", "element 1"});
  EXPECT_TRUE(files_in(dir.path()).empty());
}

TEST(CheckpointFaults, NonFiniteGpuStateIsRefused) {
  INFLLM_REQUIRE_GPU();  // the GPU check sums x * 0 on the device instead of copying x back
  TempDir dir;
  const std::string path = dir.file("step_00000003.h5");
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), -INFINITY}) {
      std::vector<float> values(1000, 1.5f);
      values[777] = bad;
      CheckpointState state;
      state.tensors.emplace_back("optim/master/ok",
                                 testing::random_normal({64, 64}).to(Device::cuda()));
      state.tensors.emplace_back(
          "optim/master/w",
          ops::cast(Tensor::from_vector(values, {1000}), dtype).to(Device::cuda()));
      expect_contains(infllm::testing::error_of([&] { save_checkpoint(path, state); }),
                      {path, "tensor 'optim/master/w'", "NaN or an Inf", "refusing to write"});
      EXPECT_TRUE(files_in(dir.path()).empty());
    }
  }
  CheckpointState finite;
  finite.tensors.emplace_back("optim/master/w",
                              testing::random_normal({64, 64}).to(Device::cuda()));
  save_checkpoint(path, finite);
  EXPECT_EQ(verify_checkpoint(path), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// The checkpoints folder: pruning, the newest good file, setting damaged files aside

TEST(CheckpointFaults, PruningNeverDeletesTheNewestVerifiedCheckpoint) {
  TempDir dir;
  const std::string out = dir.path().string(), folder = checkpoint_dir(out);
  for (int64_t step : {1, 2, 3, 4, 5})
    save_checkpoint(checkpoint_path(out, step), trainer_state(step));
  // The newest (just written) file reads back wrong: the older ones must stay.
  flip_byte(checkpoint_path(out, 5),
            data_offset(checkpoint_path(out, 5), "optim/master/embedding.weight"));
  EXPECT_EQ(prune_checkpoints(folder, 1), checkpoint_path(out, 4));
  EXPECT_EQ(list_checkpoints(folder),
            (std::vector<std::string>{checkpoint_path(out, 4), checkpoint_path(out, 5)}));

  const CheckpointScan scan = scan_checkpoints(folder);
  EXPECT_EQ(scan.newest_good, checkpoint_path(out, 4));
  ASSERT_EQ(scan.damaged.size(), 1u);
  EXPECT_EQ(scan.damaged[0].first, checkpoint_path(out, 5));
  expect_contains(scan.damaged[0].second, {"optim/master/embedding.weight"});

  // Nothing verifies: nothing is deleted.
  fs::resize_file(checkpoint_path(out, 4), 10);
  EXPECT_EQ(prune_checkpoints(folder, 1), std::nullopt);
  EXPECT_EQ(list_checkpoints(folder).size(), 2u);
  EXPECT_FALSE(scan_checkpoints(folder).newest_good.has_value());

  // Set aside, a damaged file no longer counts, and a second one of the same name is kept too.
  const std::string aside = set_aside_damaged(checkpoint_path(out, 5));
  EXPECT_EQ(aside, checkpoint_path(out, 5) + ".damaged");
  save_checkpoint(checkpoint_path(out, 5), trainer_state(5));
  fs::resize_file(checkpoint_path(out, 5), 10);
  EXPECT_EQ(set_aside_damaged(checkpoint_path(out, 5)), checkpoint_path(out, 5) + ".damaged.2");
  EXPECT_TRUE(fs::exists(aside));
  EXPECT_EQ(list_checkpoints(folder), std::vector<std::string>{checkpoint_path(out, 4)});
}

// ---------------------------------------------------------------------------------------------
// Failing writes: a full disk (RLIMIT_FSIZE) and a read-only folder, in a child process

struct ChildOutcome {
  bool exited = false;  // false: killed by a signal (a crash)
  int code = -1;
  std::string output;  // the child's stderr
};

// Runs `body` in a forked child with its stderr captured; the child ends with exit() (not
// _exit), so the process teardown - HDF5's included - runs as in the real program.
template <class Body>
ChildOutcome in_child(Body&& body) {
  int pipe_fds[2];
  EXPECT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(pipe_fds[0]);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    int code = 0;
    try {
      body();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "%s\n", error.what());
      code = 3;
    }
    std::exit(code);
  }
  ::close(pipe_fds[1]);
  ChildOutcome outcome;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;)
    outcome.output.append(buffer, size_t(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  outcome.exited = WIFEXITED(status);
  outcome.code = outcome.exited ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return outcome;
}

TEST(CheckpointFaults, DiskFullIsOneErrorNoTempFileNoCrash) {
  TempDir dir;
  const std::string out = dir.path().string(), folder = checkpoint_dir(out);
  const CheckpointState earlier = trainer_state(1);
  save_checkpoint(checkpoint_path(out, 1), earlier);
  CheckpointState big = trainer_state(2);  // 8 x 1 MiB: the limit strikes in the data or metadata
  for (int i = 0; i < 8; ++i)
    big.tensors.emplace_back("optim/big" + std::to_string(i),
                             testing::random_normal({256, 1024}, DType::f32));
  for (rlim_t limit : {rlim_t(4096), rlim_t(64) << 10, rlim_t(3) << 20}) {
    const ChildOutcome child = in_child([&] {
      ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG, as on a full disk
      const rlimit size_limit{limit, limit};
      ::setrlimit(RLIMIT_FSIZE, &size_limit);
      save_checkpoint(checkpoint_path(out, 2), big);
    });
    ASSERT_TRUE(child.exited) << "the child crashed (signal " << child.code - 128
                              << ") at a limit of " << limit << " bytes:\n"
                              << child.output;
    EXPECT_EQ(child.code, 3) << child.output;
    expect_contains(child.output, {checkpoint_path(out, 2), "failed", "disk full"});
    EXPECT_EQ(child.output.find("HDF5-DIAG"), std::string::npos) << child.output;
    EXPECT_EQ(std::count(child.output.begin(), child.output.end(), '\n'), 1) << child.output;
    EXPECT_EQ(files_in(folder), std::vector<std::string>{"step_00000001.h5"}) << limit;
    EXPECT_EQ(verify_checkpoint(checkpoint_path(out, 1)), std::nullopt);
  }
}

TEST(CheckpointFaults, ReadOnlyFolderIsOneError) {
  TempDir dir;
  const std::string out = dir.path().string(), folder = checkpoint_dir(out);
  save_checkpoint(checkpoint_path(out, 1), trainer_state(1));
  fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);
  const ChildOutcome child = in_child([&] {
    if (::geteuid() ==
        0) {  // root writes anywhere: become nobody, for whom the folder is read-only
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) throw std::runtime_error("setuid failed");
    }
    save_checkpoint(checkpoint_path(out, 2), trainer_state(2));
  });
  fs::permissions(folder, fs::perms::owner_all);
  ASSERT_TRUE(child.exited) << child.output;
  EXPECT_EQ(child.code, 3) << child.output;
  expect_contains(child.output, {checkpoint_path(out, 2), "cannot create", "writable"});
  EXPECT_EQ(std::count(child.output.begin(), child.output.end(), '\n'), 1) << child.output;
  EXPECT_EQ(files_in(folder), std::vector<std::string>{"step_00000001.h5"});
}

// ---------------------------------------------------------------------------------------------
// Strict weight loading (load_master_weights: train.init_from, eval, generate)

struct Params {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<NamedParameter> named() {
    std::vector<NamedParameter> out;
    for (auto& [name, tensor] : tensors) out.emplace_back(name, &tensor);
    return out;
  }
};

// A model of `layers` blocks, with a separate head unless tied.
Params model_params(int layers, bool tied, int64_t width = 8) {
  Params params;
  params.tensors.emplace_back("embedding.weight", ops::zeros({16, width}));
  for (int i = 0; i < layers; ++i)
    params.tensors.emplace_back("blocks." + std::to_string(i) + ".mlp.weight",
                                ops::zeros({width, width}));
  if (!tied) params.tensors.emplace_back("head.weight", ops::zeros({16, width}));
  return params;
}

CheckpointState checkpoint_of(Params& params) {
  CheckpointState state;
  state.source = "c.h5";
  for (auto& [name, tensor] : params.tensors)
    state.tensors.emplace_back(kMasterPrefix + name,
                               testing::random_normal(tensor.shape(), DType::f32));
  return state;
}

TEST(CheckpointFaults, StrictLoadingListsEveryDifference) {
  Params saved = model_params(3, /*tied=*/false);
  const CheckpointState state = checkpoint_of(saved);
  const auto load_into = [&](Params& params, bool partial) {
    return load_master_weights(state, params.named(), partial, "train.init_from", "(the fix)",
                               [&](const std::string& name, const Tensor& weights) {
                                 for (auto& [n, t] : params.tensors)
                                   if (n == name) copy_into(weights, t);
                               });
  };
  Params same = model_params(3, false);
  EXPECT_TRUE(load_into(same, false).exact());
  EXPECT_EQ(same.tensors[2].second.to_vector<float>(), state.tensors[2].second.to_vector<float>());

  // More layers in the file and a tied model: every difference in one message.
  Params fewer_tied = model_params(2, /*tied=*/true);
  expect_contains(infllm::testing::error_of([&] { load_into(fewer_tied, false); }),
                  {"train.init_from", "c.h5", "0 missing", "2 in the checkpoint but not the model",
                   "unexpected: optim/master/blocks.2.mlp.weight",
                   "unexpected: optim/master/head.weight", "(the fix)"});
  // Untied model, tied checkpoint: the head is missing.
  Params tied_saved = model_params(2, true);
  const CheckpointState tied_state = checkpoint_of(tied_saved);
  Params untied = model_params(2, false);
  expect_contains(infllm::testing::error_of([&] {
                    load_master_weights(tied_state, untied.named(), false, "eval", "",
                                        [](const std::string&, const Tensor&) {});
                  }),
                  {"1 missing", "missing:    optim/master/head.weight"});
  // Another width: shape mismatches, each with both shapes.
  Params wider = model_params(3, false, 12);
  expect_contains(infllm::testing::error_of([&] { load_into(wider, false); }),
                  {"mismatched: optim/master/embedding.weight: checkpoint [16, 8] f32, model "
                   "[16, 12] f32"});
}

TEST(CheckpointFaults, PartialLoadTakesWhatMatchesAndSaysWhatItSkipped) {
  Params saved = model_params(2, /*tied=*/true);
  const CheckpointState state = checkpoint_of(saved);
  Params grown = model_params(4, /*tied=*/false);  // two more layers and a head
  std::vector<std::string> assigned;
  const WeightMatch match =
      load_master_weights(state, grown.named(), /*partial=*/true, "train.init_from", "",
                          [&](const std::string& name, const Tensor& weights) {
                            assigned.push_back(name);
                            for (auto& [n, t] : grown.tensors)
                              if (n == name) copy_into(weights, t);
                          });
  std::sort(assigned.begin(), assigned.end());
  EXPECT_EQ(assigned, (std::vector<std::string>{"blocks.0.mlp.weight", "blocks.1.mlp.weight",
                                                "embedding.weight"}));
  EXPECT_EQ(match.missing, (std::vector<std::string>{"blocks.2.mlp.weight", "blocks.3.mlp.weight",
                                                     "head.weight"}));
  EXPECT_EQ(grown.tensors[1].second.to_vector<float>(), state.tensors[1].second.to_vector<float>());
  EXPECT_EQ(grown.tensors[3].second.to_vector<float>(), std::vector<float>(64, 0.f))
      << "a layer the checkpoint lacks keeps its initialization";
  // Nothing matching at all is an error even when partial.
  Params other = model_params(0, true, 12);
  expect_contains(infllm::testing::error_of([&] {
                    load_master_weights(state, other.named(), true, "train.init_from", "",
                                        [](const std::string&, const Tensor&) {});
                  }),
                  {"no weight of checkpoint 'c.h5' fits"});
}

}  // namespace
}  // namespace infllm::train
