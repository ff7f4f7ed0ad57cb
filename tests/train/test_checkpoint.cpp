// Checkpoint files: exact round trips of every dtype and attribute kind, atomic replacement
// (a writer killed mid-save leaves the previous file whole), pruning, and the errors for bad
// files and bad states.
#include "train/checkpoint.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "data/hdf5_handle.h"
#include "tests/data/test_util.h"
#include "tests/test_util.h"
#include "train/recipe.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using data::H5Handle;
using data::testing::expect_error;
using data::testing::TempDir;

constexpr DType kAllDTypes[] = {DType::f32, DType::bf16, DType::f64, DType::i32,
                                DType::i64, DType::u16,  DType::u32};

// Random values over the whole range of integer types, normal values for float types.
Tensor random_tensor(const Shape& shape, DType dtype, std::mt19937_64& rng) {
  return visit_dtype(dtype, [&]<class T>() {
    std::vector<T> values(size_t(shape_numel(shape)));
    for (T& value : values) {
      if constexpr (std::is_same_v<T, bf16>) {
        value = float_to_bf16(std::normal_distribution<float>(0, 3)(rng));
      } else if constexpr (std::is_floating_point_v<T>) {
        value = std::normal_distribution<T>(0, 3)(rng);
      } else {
        value = std::uniform_int_distribution<T>(std::numeric_limits<T>::min(),
                                                 std::numeric_limits<T>::max())(rng);
      }
    }
    return Tensor::from_vector(values, shape);
  });
}

std::vector<uint8_t> bytes_of(const Tensor& tensor) {
  const Tensor host = tensor.to(Device::cpu()).contiguous();
  const auto* begin = static_cast<const uint8_t*>(host.data_ptr());
  return std::vector<uint8_t>(begin, begin + host.nbytes());
}

std::map<std::string, Tensor> by_name(const CheckpointState& state) {
  return std::map<std::string, Tensor>(state.tensors.begin(), state.tensors.end());
}

void expect_same_state(const CheckpointState& loaded, const CheckpointState& saved) {
  EXPECT_EQ(loaded.step, saved.step);
  EXPECT_EQ(loaded.strings, saved.strings);
  EXPECT_EQ(loaded.integers, saved.integers);
  EXPECT_EQ(loaded.numbers, saved.numbers);
  const auto loaded_tensors = by_name(loaded);
  const auto saved_tensors = by_name(saved);
  ASSERT_EQ(loaded_tensors.size(), saved_tensors.size());
  for (const auto& [name, tensor] : saved_tensors) {
    const auto found = loaded_tensors.find(name);
    ASSERT_NE(found, loaded_tensors.end()) << "lost tensor " << name;
    EXPECT_EQ(found->second.shape(), tensor.shape()) << name;
    EXPECT_EQ(found->second.dtype(), tensor.dtype()) << name;
    EXPECT_TRUE(bytes_of(found->second) == bytes_of(tensor)) << name << " changed";
  }
}

CheckpointState small_state(int64_t step, std::mt19937_64& rng) {
  CheckpointState state;
  state.step = step;
  state.tensors.emplace_back("model/wte", random_tensor({5, 3}, DType::f32, rng));
  state.tensors.emplace_back("model/layers.0.norm", random_tensor({3}, DType::f32, rng));
  state.strings["recipe"] = "train:\n  steps: " + std::to_string(step) + "\n";
  state.integers["data_step"] = step * 7;
  state.numbers["loss"] = 2.5 + double(step);
  return state;
}

// A file written with the HDF5 C API directly: root attributes and one dataset of any type.
struct RawFile {
  std::map<std::string, std::string> strings;
  std::map<std::string, int64_t> integers;
  std::optional<hid_t> dataset_type;  // a 4-element dataset "model/w"
};

void write_raw_file(const std::string& path, const RawFile& spec) {
  H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid());
  for (const auto& [key, value] : spec.strings) {
    data::testing::write_string_attribute(file.get(), key.c_str(), value, true);
  }
  for (const auto& [key, value] : spec.integers) {
    data::testing::write_int_attribute(file.get(), key.c_str(), value);
  }
  if (spec.dataset_type) {
    const hsize_t count = 4;
    const int32_t values[4] = {1, 2, 3, 4};
    H5Handle space(H5Screate_simple(1, &count, nullptr));
    H5Handle group(H5Gcreate2(file.get(), "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Handle dataset(H5Dcreate2(group.get(), "w", *spec.dataset_type, space.get(), H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Dwrite(dataset.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), 0);
  }
}

RawFile valid_raw_header() {
  RawFile spec;
  spec.strings["format"] = "infllm-checkpoint";
  spec.integers["format_version"] = 1;
  spec.integers["step"] = 3;
  return spec;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(Checkpoint, EveryDTypeAndShapeRoundTripsExactly) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::vector<Shape> shapes = {{}, {0}, {1}, {7}, {3, 5}, {0, 4}, {2, 3, 5}, {1, 1, 1, 13}};
  CheckpointState state;
  state.step = 12345;
  for (DType dtype : kAllDTypes) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      state.tensors.emplace_back(std::string("t/") + dtype_name(dtype) + "/s" + std::to_string(i),
                                 random_tensor(shapes[i], dtype, rng));
    }
  }
  // Nested names, dots kept, a name that is a prefix of another without being its group.
  state.tensors.emplace_back("model/layers.0.attn.wq", random_tensor({4, 6}, DType::f32, rng));
  state.tensors.emplace_back("optim/exp_avg/model/layers.0.attn.wq",
                             random_tensor({4, 6}, DType::f32, rng));
  state.tensors.emplace_back("a", random_tensor({2}, DType::bf16, rng));
  state.tensors.emplace_back("a.b", random_tensor({2}, DType::i64, rng));
  state.tensors.emplace_back("ab/c/d/e.f", random_tensor({3, 1}, DType::u32, rng));

  const std::string path = dir.file("step_00012345.h5");
  save_checkpoint(path, state);
  const CheckpointState loaded = load_checkpoint(path);
  expect_same_state(loaded, state);
  EXPECT_EQ(loaded.source, path);
  EXPECT_TRUE(std::is_sorted(loaded.tensors.begin(), loaded.tensors.end(),
                             [](const auto& x, const auto& y) { return x.first < y.first; }));
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"step_00012345.h5"})
      << "the temp file must be gone after a save";
}

TEST(Checkpoint, StringsIntegersAndNumbersRoundTrip) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  CheckpointState state;
  state.step = int64_t{1} << 40;
  state.strings["recipe"] = "model:\n  d_model: 64\n# ünïcode ✓ and \"quotes\"\n";
  state.strings["empty"] = "";
  state.strings["framework_version"] = "0.1.0";
  state.integers["rng/seed"] = static_cast<int64_t>(uint64_t{0xF00DFACECAFEBEEF});
  state.integers["rng/offset"] = std::uniform_int_distribution<int64_t>()(rng);
  state.integers["min"] = std::numeric_limits<int64_t>::min();
  state.integers["max"] = std::numeric_limits<int64_t>::max();
  state.integers["loader.epoch"] = 0;
  state.numbers["lr"] = std::uniform_real_distribution<double>(1e-6, 1e-2)(rng);
  state.numbers["tiny"] = 1e-300;
  state.numbers["neg"] = -std::normal_distribution<double>(100, 1)(rng);
  state.numbers["inf"] = std::numeric_limits<double>::infinity();
  state.tensors.emplace_back("model/w", random_tensor({2, 2}, DType::f32, rng));

  const std::string path = dir.file("c.h5");
  save_checkpoint(path, state);
  const CheckpointState loaded = load_checkpoint(path);
  expect_same_state(loaded, state);
  EXPECT_EQ(static_cast<uint64_t>(loaded.require_integer("rng/seed")), 0xF00DFACECAFEBEEFull);
  EXPECT_EQ(loaded.require_string("recipe"), state.strings["recipe"]);
  EXPECT_EQ(loaded.require_number("lr"), state.numbers["lr"]);
}

TEST(Checkpoint, PrefixLoadsOnlyMatchingTensors) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  CheckpointState state = small_state(9, rng);
  state.tensors.emplace_back("optim/exp_avg/model/wte", random_tensor({5, 3}, DType::f32, rng));
  state.tensors.emplace_back("optim/exp_avg_sq/model/wte", random_tensor({5, 3}, DType::f32, rng));
  const std::string path = dir.file("p.h5");
  save_checkpoint(path, state);

  const CheckpointState weights = load_checkpoint(path, Device::cpu(), "model/");
  ASSERT_EQ(weights.tensors.size(), 2u);
  EXPECT_EQ(weights.tensors[0].first, "model/layers.0.norm");
  EXPECT_EQ(weights.tensors[1].first, "model/wte");
  EXPECT_TRUE(bytes_of(weights.require_tensor("model/wte", {5, 3}, DType::f32)) ==
              bytes_of(by_name(state).at("model/wte")));
  EXPECT_EQ(weights.strings, state.strings);  // attributes always come along
  EXPECT_EQ(weights.step, 9);

  expect_error([&] { load_checkpoint(path, Device::cpu(), "ema/"); },
               {path, "no tensor name starts with 'ema/'", "holds 4 tensors"});

  const CheckpointState attributes = load_checkpoint_attributes(path);  // no tensor at all
  EXPECT_TRUE(attributes.tensors.empty());
  EXPECT_EQ(attributes.strings, state.strings);
  EXPECT_EQ(attributes.integers, state.integers);
  EXPECT_EQ(attributes.step, 9);
}

TEST(Checkpoint, LatestInPathLoadsNewest) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string out = dir.path().string();
  for (int64_t step : {10, 30, 20})
    save_checkpoint(checkpoint_path(out, step), small_state(step, rng));
  EXPECT_EQ(load_checkpoint(checkpoint_dir(out) + "/latest").step, 30);
}

TEST(Checkpoint, GpuTensorsSaveAndLoadOnTheGpu) {
  INFLLM_REQUIRE_GPU();
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  CheckpointState state;
  state.tensors.emplace_back("model/w", random_tensor({33, 7}, DType::f32, rng).to(Device::cuda()));
  state.tensors.emplace_back("model/b", random_tensor({9}, DType::bf16, rng).to(Device::cuda()));
  const std::string path = dir.file("g.h5");
  save_checkpoint(path, state);
  const CheckpointState loaded = load_checkpoint(path, Device::cuda());
  for (const auto& [name, tensor] : loaded.tensors) EXPECT_TRUE(tensor.device().is_cuda()) << name;
  expect_same_state(loaded, state);
}

// ---------------------------------------------------------------------------------------------
// Atomic replacement

TEST(Checkpoint, WriterKilledMidSaveLeavesPreviousFileIntact) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string path = dir.file("step_00000001.h5");
  const CheckpointState previous = small_state(1, rng);
  save_checkpoint(path, previous);

  CheckpointState big;  // 32 x 4 MiB: the child is still writing when the parent kills it
  big.step = 2;
  for (int i = 0; i < 32; ++i) {
    big.tensors.emplace_back("model/w" + std::to_string(i),
                             testing::random_normal({1024, 1024}, DType::f32));
  }
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      save_checkpoint(path, big);
    } catch (...) {
    }
    ::_exit(0);
  }
  const std::string temp = path + ".tmp-" + std::to_string(child);
  // Kill the child once its temp file holds 8 MiB (poll while it runs).
  int status = 0;
  bool killed = false;
  while (!killed && ::waitpid(child, &status, WNOHANG) == 0) {
    std::error_code error;
    if (fs::file_size(temp, error) > (8u << 20) && !error) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      killed = true;
    } else {
      ::usleep(100);
    }
  }
  ASSERT_TRUE(killed) << "the child finished its save without " << temp
                      << " reaching 8 MiB; the test did not interrupt a write";
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(fs::exists(temp)) << "the half-written temp file should be left behind";

  expect_same_state(load_checkpoint(path), previous);
  // The half-written temp file is not a checkpoint and does not count as one.
  EXPECT_EQ(latest_checkpoint(dir.path().string()), path);
  const CheckpointState next = small_state(3, rng);
  save_checkpoint(path, next);
  expect_same_state(load_checkpoint(path), next);
}

TEST(Checkpoint, FailedSaveLeavesPreviousFileAndNoTemp) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string path = dir.file("step_00000001.h5");
  const CheckpointState previous = small_state(1, rng);
  save_checkpoint(path, previous);
  // The target is a folder: the write succeeds, the rename fails.
  const std::string folder_path = dir.file("step_00000002.h5");
  fs::create_directories(fs::path(folder_path) / "inside");
  expect_error([&] { save_checkpoint(folder_path, previous); }, {folder_path, "renaming"});
  EXPECT_EQ(files_in(dir.path()),
            (std::vector<std::string>{"step_00000001.h5", "step_00000002.h5"}));
  expect_same_state(load_checkpoint(path), previous);
}

// ---------------------------------------------------------------------------------------------
// The checkpoints folder

TEST(Checkpoint, PathsAndStepNames) {
  EXPECT_EQ(checkpoint_path("runs/x", 42), "runs/x/checkpoints/step_00000042.h5");
  EXPECT_EQ(checkpoint_path("runs/x", 123456789), "runs/x/checkpoints/step_123456789.h5");
  EXPECT_EQ(checkpoint_dir("runs/x"), "runs/x/checkpoints");
  EXPECT_EQ(checkpoint_step("step_00000042.h5"), 42);
  EXPECT_EQ(checkpoint_step("step_7.h5"), 7);
  for (const char* other : {"step_.h5", "step_-1.h5", "step_+1.h5", "step_1a.h5", "step_1.h5x",
                            "step_1.h5.tmp-77", "xstep_1.h5", "step_1.hdf5"}) {
    EXPECT_FALSE(checkpoint_step(other).has_value()) << other;
  }
  expect_error([] { checkpoint_path("runs/x", -1); }, {"step -1"});
}

TEST(Checkpoint, PruneKeepsExactlyTheNewestAndNothingElseIsTouched) {
  TempDir dir;
  const std::vector<int64_t> steps = {1, 5, 10, 100, 2, 99999999, 123456789, 40};
  const fs::path folder = checkpoint_dir(dir.path().string());
  fs::create_directories(folder);
  std::mt19937_64 rng(testing::fresh_seed());
  for (int64_t step : steps)
    save_checkpoint(checkpoint_path(dir.path().string(), step), small_state(step, rng));
  const std::vector<std::string> others = {"notes.txt", "step_abc.h5", "step_00000003.h5.tmp-123",
                                           "step_7.h5x", "metrics.jsonl"};
  for (const std::string& name : others) std::ofstream(folder / name) << "keep me";
  fs::create_directories(folder / "step_00000004.h5");  // a folder, not a checkpoint

  const std::vector<std::string> listed = list_checkpoints(folder.string());
  ASSERT_EQ(listed.size(), steps.size());
  EXPECT_EQ(fs::path(listed.front()).filename(), "step_00000001.h5");
  EXPECT_EQ(fs::path(listed.back()).filename(), "step_123456789.h5");
  EXPECT_EQ(latest_checkpoint(folder.string()), (folder / "step_123456789.h5").string());
  // The recipe's resolver picks the same file.
  EXPECT_EQ(resolve_checkpoint_path((folder / "latest").string()),
            (folder / "step_123456789.h5").string());

  prune_checkpoints(folder.string(), 3);
  std::vector<std::string> expected = others;
  expected.insert(expected.end(), {"step_00000004.h5", "step_00000100.h5", "step_99999999.h5",
                                   "step_123456789.h5"});
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(files_in(folder), expected);

  prune_checkpoints(folder.string(), 3);  // idempotent
  EXPECT_EQ(files_in(folder), expected);
  prune_checkpoints(folder.string(), 1);
  EXPECT_EQ(list_checkpoints(folder.string()),
            std::vector<std::string>{(folder / "step_123456789.h5").string()});
  expect_error([&] { prune_checkpoints(folder.string(), 0); }, {"keep_last is 0"});

  const std::string missing = dir.file("no_such_folder");
  EXPECT_TRUE(list_checkpoints(missing).empty());
  EXPECT_FALSE(latest_checkpoint(missing).has_value());
  prune_checkpoints(missing, 2);
}

// ---------------------------------------------------------------------------------------------
// Errors: bad files

TEST(Checkpoint, MissingFileNamesThePathAndTheNewestCheckpoint) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string missing = dir.file("step_00000099.h5");
  expect_error([&] { load_checkpoint(missing); }, {missing, "file not found", "<out_dir>"});
  const std::string existing = dir.file("step_00000005.h5");
  save_checkpoint(existing, small_state(5, rng));
  expect_error([&] { load_checkpoint(missing); }, {missing, "file not found", existing});
  expect_error([&] { load_checkpoint(dir.path().string()); }, {"is a folder", "latest"});
}

TEST(Checkpoint, NonHdf5FileIsRejected) {
  TempDir dir;
  const std::string path = dir.file("step_00000001.h5");
  std::ofstream(path) << "model:\n  d_model: 64\n";
  expect_error([&] { load_checkpoint(path); }, {path, "is not an HDF5 file"});
  std::ofstream(path, std::ios::trunc).close();  // empty
  expect_error([&] { load_checkpoint(path); }, {path, "is not an HDF5 file", "0 bytes"});
}

TEST(Checkpoint, TruncatedFileIsRejected) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string path = dir.file("step_00000001.h5");
  CheckpointState state = small_state(1, rng);
  state.tensors.emplace_back("model/big", random_tensor({256, 256}, DType::f32, rng));
  save_checkpoint(path, state);
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_error([&] { load_checkpoint(path); }, {path, "damaged or truncated"});
  fs::resize_file(path, 5);  // not even the signature is left
  expect_error([&] { load_checkpoint(path); }, {path, "not an HDF5 file", "truncated"});
}

TEST(Checkpoint, Hdf5FileThatIsNotACheckpointIsRejected) {
  TempDir dir;
  const std::string path = dir.file("tokens.h5");
  RawFile spec;
  spec.integers["vocab_size"] = 258;
  spec.dataset_type = H5T_STD_U16LE;
  write_raw_file(path, spec);
  expect_error([&] { load_checkpoint(path); },
               {path, "missing attribute 'format'", "not an infllm checkpoint"});

  spec.strings["format"] = "something-else";
  write_raw_file(path, spec);
  expect_error([&] { load_checkpoint(path); }, {path, "'format' is not", "not an infllm"});
}

TEST(Checkpoint, MissingOrBadRequiredAttributesAreRejected) {
  TempDir dir;
  const std::string path = dir.file("c.h5");
  RawFile spec = valid_raw_header();
  spec.integers.erase("step");
  write_raw_file(path, spec);
  expect_error([&] { load_checkpoint(path); }, {path, "missing required attribute 'step'"});

  spec = valid_raw_header();
  spec.integers["format_version"] = 3;
  write_raw_file(path, spec);
  expect_error([&] { load_checkpoint(path); },
               {path, "format_version 3", "reads up to 2", "update infllm"});

  spec = valid_raw_header();
  spec.integers["step"] = -4;
  write_raw_file(path, spec);
  expect_error([&] { load_checkpoint(path); }, {path, "'step' is not a non-negative integer"});

  spec = valid_raw_header();  // the raw header itself is a valid (empty) checkpoint
  write_raw_file(path, spec);
  EXPECT_EQ(load_checkpoint(path).step, 3);
}

TEST(Checkpoint, UnsupportedTensorTypeIsRejected) {
  TempDir dir;
  const std::string path = dir.file("c.h5");
  RawFile spec = valid_raw_header();
  spec.dataset_type = H5T_STD_I8LE;
  write_raw_file(path, spec);
  expect_error([&] { load_checkpoint(path); }, {path, "tensor 'model/w'", "int8", "convert"});

  spec.dataset_type = H5T_STD_I32BE;  // other byte orders convert exactly
  write_raw_file(path, spec);
  const CheckpointState loaded = load_checkpoint(path);
  EXPECT_EQ(loaded.require_tensor("model/w", {4}, DType::i32).to_vector<int32_t>(),
            (std::vector<int32_t>{1, 2, 3, 4}));
}

TEST(Checkpoint, MissingOrMismatchedTensorNamesFileKeyAndFix) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string path = dir.file("step_00000004.h5");
  save_checkpoint(path, small_state(4, rng));
  const CheckpointState loaded = load_checkpoint(path);
  expect_error([&] { loaded.require_tensor("model/layers.1.norm"); },
               {path, "missing tensor 'model/layers.1.norm'", "has 2 tensors", "recipe"});
  expect_error(
      [&] {
        loaded.require_tensor("model/wte", {3, 5}, DType::f32);
      },
      {path, "'model/wte' is [5, 3] f32, expected [3, 5] f32"});
  expect_error(
      [&] {
        loaded.require_tensor("model/wte", {5, 3}, DType::bf16);
      },
      {path, "expected [5, 3] bf16"});
  expect_error([&] { loaded.require_integer("bad_steps"); }, {path, "missing integer 'bad_steps'"});
  expect_error([&] { loaded.require_string("tokenizer"); }, {path, "missing string 'tokenizer'"});
  expect_error([&] { loaded.require_number("lr"); }, {path, "missing number 'lr'"});
}

// ---------------------------------------------------------------------------------------------
// Errors: bad states (checked before anything is written)

TEST(Checkpoint, BadStatesAreRejectedBeforeWriting) {
  TempDir dir;
  std::mt19937_64 rng(testing::fresh_seed());
  const std::string path = dir.file("step_00000001.h5");
  const Tensor value = random_tensor({2}, DType::f32, rng);
  const auto rejected = [&](const CheckpointState& state, const std::vector<std::string>& parts) {
    const std::string message = infllm::testing::error_of([&] { save_checkpoint(path, state); });
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "lacks \"" << part << "\": " << message;
    EXPECT_TRUE(files_in(dir.path()).empty()) << "a rejected state must write nothing";
  };
  for (const char* bad : {"", "/model/w", "model/", "model//w", "model/./w", "../w"}) {
    CheckpointState state;
    state.tensors.emplace_back(bad, value);
    rejected(state, {path, "tensor name '" + std::string(bad) + "' is not a valid path"});
  }
  CheckpointState state;
  state.tensors = {{"model/w", value}, {"model/w", value}};
  rejected(state, {"'model/w' appears twice"});
  state.tensors = {{"model", value}, {"model.b", value}, {"model/w", value}};
  rejected(state, {"tensor 'model' is also the group of 'model/w'"});
  state.tensors = {{"model/w", Tensor()}};
  rejected(state, {"'model/w' is undefined"});

  state = CheckpointState();
  state.integers["step"] = 3;
  rejected(state, {"integer key 'step' is reserved"});
  state = CheckpointState();
  state.strings["checksums"] = "x";
  rejected(state, {"string key 'checksums' is reserved"});
  state = CheckpointState();
  state.numbers["a\tb"] = 1.0;
  rejected(state, {"number key 'a\tb' holds a tab or a newline"});
  state = CheckpointState();
  state.strings["seed"] = "a";
  state.numbers["seed"] = 1.0;
  rejected(state, {"key 'seed' is both a string and a number"});
  state = CheckpointState();
  state.step = -1;
  rejected(state, {"step -1 is negative"});
}

}  // namespace
}  // namespace infllm::train
