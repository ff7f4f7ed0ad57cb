// Recipes: the shipped files, extends, overrides, every error message, and the YAML round trip.
// Runs from the repository root (ctest sets the working directory).
#include "train/recipe.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>

#include "core/error.h"
#include "tests/test_util.h"

namespace infllm::train {
namespace {
namespace fs = std::filesystem;

// Every recipe in recipes/, by name without .yaml.
std::vector<std::string> shipped_recipes() {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator("recipes"))
    if (item.path().extension() == ".yaml") names.push_back(item.path().stem().string());
  return names;
}

const ValidateOptions kNoFileCheck{.check_files = false};

using testing::error_of;
using testing::expect_error;

// The smallest valid recipe; tests append or override what they exercise.
constexpr const char* kMinimal =
    "model:\n"
    "  d_model: 64\n"
    "  n_layers: 2\n"
    "  n_heads: 4\n"
    "  ffn_hidden: 128\n"
    "data:\n"
    "  train: random\n"
    "  seq_len: 16\n"
    "  batch_size: 2\n"
    "train:\n"
    "  steps: 10\n"
    "  out_dir: runs/test\n";

class RecipeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("infllm_recipe_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `text` to dir_/name and returns the path.
  std::string write(const std::string& name, const std::string& text) {
    const fs::path path = dir_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path.string();
  }

  // A minimal recipe plus `extra` overrides, loaded.
  Recipe load_minimal(const std::vector<std::string>& overrides) {
    return load_recipe(write("minimal.yaml", kMinimal), overrides);
  }

  fs::path dir_;
};

TEST_F(RecipeTest, ShippedRecipesParseAndRoundTrip) {
  const std::vector<std::string> names = shipped_recipes();
  for (const char* name : {"quickstart", "pretrain_short", "finetune_long", "bench200m"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    const Recipe recipe = load_recipe("recipes/" + name + ".yaml", {}, kNoFileCheck);
    const Recipe again =
        load_recipe(write(name + ".yaml", recipe_to_yaml(recipe)), {}, kNoFileCheck);
    EXPECT_EQ(recipe, again);
  }
}

TEST_F(RecipeTest, ShippedRecipeValues) {
  const Recipe quick = load_recipe("recipes/quickstart.yaml", {}, kNoFileCheck);
  EXPECT_EQ(quick.model.d_model, 128);
  EXPECT_EQ(quick.model.n_kv_heads, 1);
  EXPECT_EQ(quick.model.head_dim, 64);  // resolved from d_model / n_heads
  EXPECT_EQ(quick.data.train, "data/corpus/english.h5");
  EXPECT_EQ(quick.data.val, "data/corpus/english.val.h5");

  const Recipe pretrain = load_recipe("recipes/pretrain_short.yaml", {}, kNoFileCheck);
  const Recipe finetune = load_recipe("recipes/finetune_long.yaml", {}, kNoFileCheck);
  // Same weights, same shapes: the models differ only in how they run (attention path,
  // activation checkpointing).
  ModelConfig finetune_shape = finetune.model;
  finetune_shape.attention = pretrain.model.attention;
  finetune_shape.activation_checkpointing = pretrain.model.activation_checkpointing;
  finetune_shape.recompute_attention = pretrain.model.recompute_attention;
  EXPECT_EQ(finetune_shape, pretrain.model);
  EXPECT_EQ(pretrain.model.attention.mode, attention::AttentionMode::dense);
  EXPECT_EQ(finetune.model.attention.mode, attention::AttentionMode::sparse);
  EXPECT_EQ(finetune.data.seq_len, 32768);
  EXPECT_EQ(finetune.data.batch_size, 1);
  EXPECT_EQ(finetune.data.train, pretrain.data.train);
  EXPECT_TRUE(finetune.model.activation_checkpointing);
  EXPECT_EQ(finetune.train.init_from, "runs/pretrain_short/checkpoints/latest");
  EXPECT_NE(finetune.train.out_dir, pretrain.train.out_dir);
  EXPECT_EQ(finetune.optim.weight_decay, pretrain.optim.weight_decay);  // inherited

  const Recipe bench = load_recipe("recipes/bench200m.yaml", {}, kNoFileCheck);
  EXPECT_EQ(bench.model.vocab_size, 32000);
  EXPECT_EQ(bench.data.train, kRandomData);
  EXPECT_EQ(bench.data.seq_len * bench.data.batch_size, 8 * 4096);
}

// With the files checked, the shipped recipes load exactly when the corpus exists (the data
// helper's `infllm prepare` writes it) and otherwise say how to create it.
TEST_F(RecipeTest, ShippedRecipesCheckTheirFiles) {
  const bool corpus =
      fs::exists("data/corpus/english.h5") && fs::exists("data/corpus/english.val.h5");
  for (const std::string name : {"quickstart", "pretrain_short"}) {
    SCOPED_TRACE(name);
    const auto load = [&] { load_recipe("recipes/" + name + ".yaml", {}); };
    if (corpus) {
      EXPECT_NO_THROW(load());
    } else {
      expect_error(load, {"data.", "file not found: data/corpus/english", "infllm prepare"});
    }
  }
  EXPECT_NO_THROW(load_recipe("recipes/bench200m.yaml", {}));  // random data: no file
  if (!corpus) return;
  // finetune_long also needs pretrain_short's checkpoint.
  bool pretrained = true;
  try {
    resolve_checkpoint_path("runs/pretrain_short/checkpoints/latest");
  } catch (const Error&) {
    pretrained = false;
  }
  const auto finetune = [] { load_recipe("recipes/finetune_long.yaml", {}); };
  if (pretrained) {
    EXPECT_NO_THROW(finetune());
  } else {
    expect_error(finetune, {"train.init_from", "runs/pretrain_short/checkpoints",
                            "in recipes/finetune_long.yaml", "<out_dir>/checkpoints/"});
  }
}

TEST_F(RecipeTest, MinimalRecipeGetsTheDefaults) {
  const Recipe recipe = load_minimal({});
  Recipe expected;
  expected.model.d_model = 64;
  expected.model.n_layers = 2;
  expected.model.n_heads = 4;
  expected.model.n_kv_heads = 4;  // defaults to n_heads
  expected.model.head_dim = 16;   // d_model / n_heads
  expected.model.ffn_hidden = 128;
  expected.data.train = "random";
  expected.data.seq_len = 16;
  expected.data.batch_size = 2;
  expected.train.steps = 10;
  expected.train.out_dir = "runs/test";
  EXPECT_EQ(recipe, expected);
  EXPECT_EQ(recipe.optim.no_decay, (std::vector<std::string>{"norm", "embedding"}));
  EXPECT_EQ(recipe.model.attention.mode, attention::AttentionMode::automatic);
}

TEST_F(RecipeTest, ExtendsMergesDeeplyAcrossFolders) {
  write("base/grand.yaml", std::string(kMinimal) + "optim:\n  lr: 0.01\n  beta2: 0.99\n");
  write("base/parent.yaml",
        "extends: grand.yaml\n"
        "model:\n  n_layers: 3\n"
        "optim:\n  lr: 0.02\n");
  const std::string child = write("runs/child.yaml",
                                  "extends: ../base/parent.yaml\n"
                                  "model:\n  d_model: 96\n"
                                  "train:\n  steps: 20\n");
  const Recipe recipe = load_recipe(child, {});
  EXPECT_EQ(recipe.model.d_model, 96);  // child
  EXPECT_EQ(recipe.model.n_layers, 3);  // parent
  EXPECT_EQ(recipe.model.n_heads, 4);   // grandparent, same section as the child's key
  EXPECT_EQ(recipe.optim.lr, 0.02);     // parent over grandparent
  EXPECT_EQ(recipe.optim.beta2, 0.99);  // grandparent
  EXPECT_EQ(recipe.train.steps, 20);    // child
  EXPECT_EQ(recipe.train.out_dir, "runs/test");
}

TEST_F(RecipeTest, ExtendsCycleIsAnError) {
  write("a.yaml", "extends: b.yaml\n");
  const std::string b = write("b.yaml", "extends: a.yaml\n");
  expect_error([&] { load_recipe(b, {}); }, {"extends: cycle", "a.yaml", "b.yaml", "remove"});
  const std::string self = write("self.yaml", "extends: self.yaml\n");
  expect_error([&] { load_recipe(self, {}); }, {"extends: cycle", "self.yaml"});
}

TEST_F(RecipeTest, ExtendsMissingFileNamesBothFiles) {
  const std::string child = write("child.yaml", "extends: nowhere.yaml\n");
  expect_error([&] { load_recipe(child, {}); },
               {"extends: file not found", "nowhere.yaml", "named in " + child, "relative"});
  expect_error([&] { load_recipe((dir_ / "absent.yaml").string(), {}); },
               {"absent.yaml", "recipe file not found"});
}

TEST_F(RecipeTest, OverridesApplyAfterExtends) {
  const Recipe recipe = load_minimal(
      {"train.steps=100", "train.out_dir=runs/q", "attention.mode=sparse", "optim.no_decay=[norm]",
       "optim.lr=1e-3", "train.activation_checkpointing=true", "train.recompute_attention=true",
       "data.val=random", "train.eval_every=5", "distributed.init=file:/tmp/rdv"});
  EXPECT_EQ(recipe.train.steps, 100);
  EXPECT_EQ(recipe.train.out_dir, "runs/q");
  EXPECT_EQ(recipe.model.attention.mode, attention::AttentionMode::sparse);
  EXPECT_EQ(recipe.optim.no_decay, std::vector<std::string>{"norm"});
  EXPECT_EQ(recipe.optim.lr, 1e-3);
  EXPECT_TRUE(recipe.model.activation_checkpointing);
  EXPECT_TRUE(recipe.model.recompute_attention);
  EXPECT_EQ(recipe.train.eval_every, 5);
  EXPECT_EQ(recipe.distributed.init, "file:/tmp/rdv");
  // The last override of a key wins; an empty value restores the default.
  EXPECT_EQ(load_minimal({"train.seed=1", "train.seed=7"}).train.seed, 7u);
  EXPECT_EQ(load_minimal({"optim.no_decay=[]"}).optim.no_decay, std::vector<std::string>{});
  EXPECT_EQ(load_minimal({"data.val=random", "data.val="}).data.val, "");
}

TEST_F(RecipeTest, OverrideCanSupplyARequiredValue) {
  std::string text = kMinimal;
  text.erase(text.find("  steps: 10\n"), 12);
  const std::string partial = write("nosteps.yaml", text);
  expect_error([&] { load_recipe(partial, {}); },
               {"train.steps: missing required value", "in " + partial, "train.steps=VALUE"});
  EXPECT_EQ(load_recipe(partial, {"train.steps=3"}).train.steps, 3);
  expect_error([&] { load_minimal({"data.train="}); },
               {"data.train: missing required value", "on the command line"});
}

TEST_F(RecipeTest, OverrideErrors) {
  expect_error([&] { load_minimal({"train.stesp=5"}); },
               {"train.stesp: unknown key on the command line", "did you mean train.steps?"});
  expect_error([&] { load_minimal({"trian.steps=5"}); },
               {"trian: unknown section on the command line", "did you mean train?"});
  expect_error([&] { load_minimal({"train.steps"}); },
               {"command line", "\"train.steps\" is not section.key=value", "train.steps=100"});
  expect_error([&] { load_minimal({"steps=5"}); }, {"command line", "section.key=value"});
  expect_error([&] { load_minimal({"optim.no_decay=[norm"}); },
               {"optim.no_decay", "not valid YAML", "command line", "[a, b]"});
  expect_error([&] { load_minimal({"train.steps=ten"}); },
               {"train.steps: expected an integer, got \"ten\" on the command line"});
}

// `body` in a file that extends the minimal recipe: its keys override the minimal ones.
class RecipeFileTest : public RecipeTest {
 protected:
  std::string child(const std::string& name, const std::string& body) {
    write("minimal.yaml", kMinimal);
    return write(name, "extends: minimal.yaml\n" + body);
  }
};

TEST_F(RecipeFileTest, UnknownKeysAndSections) {
  const std::string key = child("key.yaml", "model:\n  n_head: 4\n");
  expect_error([&] { load_recipe(key, {}); },
               {"model.n_head: unknown key in " + key + "; did you mean model.n_heads?"});
  const std::string wrong_section = child("wrong.yaml", "optim:\n  seq_len: 8\n");
  expect_error([&] { load_recipe(wrong_section, {}); },
               {"optim.seq_len: unknown key in " + wrong_section, "did you mean data.seq_len?"});
  const std::string far = child("far.yaml", "optim:\n  zzzzzz: 8\n");
  expect_error([&] { load_recipe(far, {}); },
               {"optim.zzzzzz: unknown key in " + far, "the keys of optim are lr, weight_decay"});
  const std::string section = child("section.yaml", "optimizer:\n  lr: 1\n");
  expect_error([&] { load_recipe(section, {}); },
               {"optimizer: unknown section in " + section, "did you mean optim?"});
  const std::string nowhere = child("nowhere.yaml", "qqqqqqqq:\n  a: 1\n");
  expect_error([&] { load_recipe(nowhere, {}); },
               {"qqqqqqqq: unknown section", "the sections are model, attention, data"});
  const std::string flat = child("flat.yaml", "log: 5\n");
  expect_error([&] { load_recipe(flat, {}); }, {"log: expected a mapping of keys", flat});
  const std::string dup_key = child("dup.yaml", "log:\n  every: 1\n  every: 2\n");
  expect_error([&] { load_recipe(dup_key, {}); }, {"log.every: duplicate key", dup_key});
  const std::string dup_section = child("dups.yaml", "log:\n  every: 1\nlog:\n  every: 2\n");
  expect_error([&] { load_recipe(dup_section, {}); }, {"log: duplicate section", dup_section});
  const std::string bad_extends = write("bad_extends.yaml", "extends: [a.yaml, b.yaml]\n");
  expect_error([&] { load_recipe(bad_extends, {}); },
               {"extends: expected one file name", bad_extends});
}

TEST_F(RecipeFileTest, WrongTypesNameKeyValueAndFile) {
  struct Case {
    std::string body;
    std::string_view fragment;
  };
  const std::vector<Case> cases = {
      {"train:\n  steps: ten\n", "train.steps: expected an integer, got \"ten\""},
      {"train:\n  steps: 2.5\n", "train.steps: expected an integer, got \"2.5\""},
      {"train:\n  seed: -1\n", "train.seed: expected a non-negative integer, got \"-1\""},
      {"model:\n  d_model: 99999999999\n", "model.d_model: 99999999999 is out of range"},
      {"optim:\n  lr: fast\n", "optim.lr: expected a finite number, got \"fast\""},
      {"optim:\n  lr: .nan\n", "optim.lr: expected a finite number"},
      {"log:\n  tensorboard: maybe\n", "log.tensorboard: expected true or false, got \"maybe\""},
      {"optim:\n  no_decay: norm\n", "optim.no_decay: expected a list of strings, got \"norm\""},
      {"optim:\n  no_decay: [[a]]\n", "optim.no_decay: expected a list of strings"},
      {"train:\n  out_dir: [a, b]\n", "train.out_dir: expected a string, got [a, b]"},
      {"attention:\n  mode: spares\n",
       "attention.mode: \"spares\" is not one of dense, sparse, auto"},
      {"schedule:\n  kind: linear\n",
       "schedule.kind: \"linear\" is not one of cosine, wsd, constant"},
      {"train:\n  device: gpu\n", "train.device: \"gpu\" is not one of auto, cpu, cuda"},
      {"train:\n  precision: fp16\n", "train.precision: \"fp16\" is not one of bf16, f32"},
      {"model:\n  d_model:\n", "model.d_model: missing required value"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].body);
    const std::string path = child("case" + std::to_string(i) + ".yaml", cases[i].body);
    expect_error([&] { load_recipe(path, {}); }, {cases[i].fragment, "in " + path});
  }
}

TEST_F(RecipeTest, YamlSyntaxErrorGivesLineAndColumn) {
  const std::string path = write("broken.yaml", "model:\n  d_model: [64\n  n_layers: 2\n");
  expect_error([&] { load_recipe(path, {}); }, {path + ":", "YAML syntax error", "indentation"});
  const std::string indent = write("indent.yaml", "model:\n  d_model: 64\n   n_layers: 2\n");
  expect_error([&] { load_recipe(indent, {}); }, {indent + ":3:", "YAML syntax error"});
  const std::string list = write("list.yaml", "- model\n- data\n");
  expect_error([&] { load_recipe(list, {}); }, {list, "a recipe is a mapping of sections"});
}

TEST_F(RecipeTest, DataFilesMustExist) {
  const std::string missing = (dir_ / "missing.h5").string();
  expect_error([&] { load_minimal({"data.train=" + missing}); },
               {"data.train: file not found: " + missing, "on the command line",
                "infllm prepare -o " + missing});
  expect_error(
      [&] {
        load_minimal({"data.val=" + missing, "train.eval_every=0"});
      },
      {"data.val: file not found: " + missing, "infllm prepare"});
  const std::string present = write("tokens.h5", "not really hdf5, but a file");
  EXPECT_EQ(load_minimal({"data.train=" + present, "data.val=" + present}).data.train, present);
  // The file check can be switched off for tools that only read a recipe.
  EXPECT_NO_THROW(load_recipe(write("r.yaml", kMinimal), {"data.train=" + missing}, kNoFileCheck));
}

// Every impossible value, given on the command line: the key, the value and the fix.
TEST_F(RecipeTest, ImpossibleValues) {
  struct Case {
    std::vector<std::string> overrides;
    std::vector<std::string_view> fragments;
  };
  const std::vector<Case> cases = {
      {{"model.n_heads=5"},
       {"model.n_heads: 5 does not divide model.d_model = 64", "or set model.head_dim"}},
      {{"model.n_kv_heads=3"}, {"model.n_kv_heads: 3 does not divide model.n_heads = 4"}},
      {{"model.n_kv_heads=8"}, {"model.n_kv_heads: 8 does not divide model.n_heads = 4"}},
      {{"model.d_model=0"}, {"model.d_model: must be positive, got 0", "greater than 0"}},
      {{"model.n_layers=-1"}, {"model.n_layers: must be positive, got -1"}},
      {{"model.ffn_hidden=0"}, {"model.ffn_hidden: must be positive"}},
      {{"model.vocab_size=0"}, {"model.vocab_size: must be positive"}},
      {{"model.head_dim=-2"}, {"model.head_dim: must be 0 or more"}},
      {{"model.head_dim=15"}, {"model.head_dim: 15 is odd", "even"}},
      {{"model.d_model=60", "model.n_heads=4"},
       {"model.head_dim: is 0, so d_model / n_heads = 15"}},
      {{"model.norm_eps=0"}, {"model.norm_eps: must be positive"}},
      {{"data.seq_len=1"}, {"data.seq_len: must be at least 2, got 1"}},
      {{"data.batch_size=0"}, {"data.batch_size: must be positive"}},
      {{"data.grad_accum=0"}, {"data.grad_accum: must be positive"}},
      {{"attention.block_size=40"},
       {"attention.block_size: 40 is not a multiple of attention.kernel_stride = 16"}},
      {{"attention.kernel_size=40"},
       {"attention.kernel_size: 40 is not a multiple of attention.kernel_stride = 16"}},
      {{"attention.window_size=1000"},
       {"attention.window_size: 1000 is not a multiple of attention.block_size = 64"}},
      {{"attention.topk=16"},
       {"attention.topk: 16 is less than init_blocks + window_size / block_size = 33",
        "at least 33"}},
      {{"attention.kernel_stride=0"}, {"attention.kernel_stride: must be positive"}},
      {{"attention.lse_stride=0"}, {"attention.lse_stride: must be positive"}},
      {{"attention.dense_len=-1"}, {"attention.dense_len: must be 0 or more"}},
      {{"schedule.warmup_steps=11"},
       {"schedule.warmup_steps: 11 is more than train.steps = 10", "raise train.steps"}},
      {{"schedule.kind=wsd", "schedule.warmup_steps=9"},
       {"schedule.decay_fraction: leaves no room"}},
      {{"schedule.min_lr_ratio=1.5"}, {"schedule.min_lr_ratio: 1.5 is outside [0, 1]"}},
      {{"optim.lr=0"}, {"optim.lr: must be positive, got 0"}},
      {{"optim.lr=-0.001"}, {"optim.lr: must be positive, got -0.001"}},
      {{"optim.beta1=1"}, {"optim.beta1: 1 is outside (0, 1)"}},
      {{"optim.beta2=0"}, {"optim.beta2: 0 is outside (0, 1)"}},
      {{"optim.grad_clip=-1"}, {"optim.grad_clip: must be 0 or more"}},
      {{"train.steps=0"}, {"train.steps: must be positive"}},
      {{"train.out_dir=''"}, {"train.out_dir: is empty", "train.out_dir=runs/"}},
      {{"train.eval_every=10"}, {"train.eval_every: is 10 but data.val is empty", "eval_every=0"}},
      {{"checkpoint.keep_last=0"}, {"checkpoint.keep_last: must be positive"}},
      {{"log.every=0"}, {"log.every: must be positive"}},
      {{"distributed.zero=2"}, {"distributed.zero: must be 0 or 1, got 2"}},
      {{"distributed.init=tcp://host"},
       {"distributed.init: \"tcp://host\" is neither env nor file:PATH", "file:/shared"}},
      {{"distributed.init='file:'"}, {"distributed.init: \"file:\" is neither env nor file:PATH"}},
      {{"distributed.timeout_s=0"}, {"distributed.timeout_s: must be positive"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.overrides.back());
    const std::string message = error_of([&] { load_minimal(c.overrides); });
    EXPECT_NE(message.find("on the command line"), std::string::npos) << message;
    for (std::string_view fragment : c.fragments)
      EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
  // A value set in a file is blamed on that file.
  const std::string path = write(
      "heads.yaml",
      std::string(kMinimal).replace(std::string(kMinimal).find("n_heads: 4"), 10, "n_heads: 6"));
  expect_error([&] { load_recipe(path, {}); }, {"model.n_heads: 6 does not divide", "in " + path});
  // An explicit head_dim lifts the divisibility rule.
  EXPECT_EQ(
      load_minimal({"model.n_heads=6", "model.n_kv_heads=3", "model.head_dim=16"}).model.head_dim,
      16);
  // dense_len 0: auto mode takes the sparse path at every length (check_sparse_config's rule).
  EXPECT_EQ(load_minimal({"attention.dense_len=0"}).model.attention.sparse.dense_len, 0);
}

TEST_F(RecipeTest, ValidateRecipeNamesItsSource) {
  Recipe recipe = load_minimal({});
  EXPECT_NO_THROW(validate_recipe(recipe, "checkpoint.h5"));
  recipe.model.attention.sparse.topk = 2;
  expect_error([&] { validate_recipe(recipe, "checkpoint.h5"); },
               {"attention.topk: 2 is less than", "in checkpoint.h5"});
}

TEST_F(RecipeTest, RoundTripKeepsEveryValue) {
  Recipe recipe = load_minimal({});
  recipe.model.rope_theta = 500000.0;
  recipe.model.norm_eps = 1e-6;
  recipe.model.init_std = 0.0123456789012345;
  recipe.model.tie_embeddings = true;
  recipe.optim.lr = 3e-4;
  recipe.optim.eps = 1e-8;
  recipe.optim.no_decay = {"norm", "bias: odd", "#hash", "null", "true", ""};
  recipe.schedule.kind = LrScheduleKind::wsd;
  recipe.schedule.decay_fraction = 1.0 / 3.0;
  recipe.train.seed = 18446744073709551615ull;
  recipe.train.out_dir = "runs/a: b #c";
  recipe.train.device = DeviceChoice::cuda;
  recipe.train.precision = Precision::f32;
  recipe.train.init_from = "";
  recipe.data.val = "null";
  recipe.distributed.init = "file:/shared/rendezvous";
  recipe.distributed.zero = 1;
  validate_recipe(recipe, "test", kNoFileCheck);
  const std::string text = recipe_to_yaml(recipe);
  const Recipe again = load_recipe(write("round.yaml", text), {}, kNoFileCheck);
  EXPECT_EQ(recipe, again) << text;
  EXPECT_EQ(recipe_to_yaml(again), text);
  EXPECT_EQ(recipe_from_yaml(text, "checkpoint.h5", kNoFileCheck), recipe);
  for (const char* key :
       {"model:", "attention:", "data:", "optim:", "schedule:", "train:", "checkpoint:", "log:",
        "distributed:", "n_kv_heads: 4", "head_dim: 16", "mode: auto", "kind: wsd", "lr: 0.0003"}) {
    EXPECT_NE(text.find(key), std::string::npos) << key << " missing from\n" << text;
  }
}

TEST_F(RecipeTest, RecipeFromTextChecksLikeAFile) {
  const Recipe recipe = recipe_from_yaml(kMinimal, "checkpoint.h5");
  EXPECT_EQ(recipe, load_minimal({}));
  expect_error([] { recipe_from_yaml(std::string(kMinimal) + "log:\n  evry: 5\n", "ckpt.h5"); },
               {"log.evry: unknown key in ckpt.h5; did you mean log.every?"});
  expect_error([] { recipe_from_yaml("model: [1\n", "ckpt.h5"); },
               {"ckpt.h5:2:", "YAML syntax error"});
  expect_error([] { recipe_from_yaml("extends: a.yaml\n", "ckpt.h5"); },
               {"extends: not allowed in ckpt.h5"});
}

TEST_F(RecipeTest, EnumNames) {
  EXPECT_EQ(to_string(attention::AttentionMode::automatic), "auto");
  EXPECT_EQ(to_string(attention::AttentionMode::sparse), "sparse");
  EXPECT_EQ(to_string(LrScheduleKind::wsd), "wsd");
  EXPECT_EQ(to_string(DeviceChoice::cpu), "cpu");
  EXPECT_EQ(to_string(Precision::bf16), "bf16");
}

TEST_F(RecipeTest, CheckpointLatestIsTheNewestStep) {
  const fs::path folder = dir_ / "run" / "checkpoints";
  expect_error([&] { resolve_checkpoint_path((folder / "latest").string()); },
               {"checkpoint folder not found", folder.string()});
  fs::create_directories(folder);
  expect_error([&] { resolve_checkpoint_path((folder / "latest").string()); },
               {"no step_XXXXXXXX.h5 checkpoint in", folder.string()});
  for (const char* name : {"step_00000100.h5", "step_00000300.h5", "step_00000020.h5",
                           "step_99999999.tmp", "step_x.h5", "other.h5"})
    write(("run/checkpoints/" + std::string(name)), "x");
  EXPECT_EQ(resolve_checkpoint_path((folder / "latest").string()),
            (folder / "step_00000300.h5").string());
  const std::string file = (folder / "step_00000100.h5").string();
  EXPECT_EQ(resolve_checkpoint_path(file), file);
  expect_error([&] { resolve_checkpoint_path((folder / "step_00000007.h5").string()); },
               {"checkpoint not found", "step_00000007.h5"});

  // train.init_from is checked the same way, and `latest` works there too.
  EXPECT_EQ(load_minimal({"train.init_from=" + (folder / "latest").string()}).train.init_from,
            (folder / "latest").string());
  expect_error([&] { load_minimal({"train.init_from=" + (dir_ / "nope.h5").string()}); },
               {"train.init_from: checkpoint not found", "nope.h5", "on the command line",
                "<out_dir>/checkpoints/"});
}

}  // namespace
}  // namespace infllm::train
