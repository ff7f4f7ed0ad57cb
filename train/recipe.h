// Recipes: one YAML file that says everything about a training run, turned into plain structs.
//
// A recipe has the sections model, attention, data, optim, schedule, train, checkpoint, log and
// distributed (docs/recipes.md lists every key). A recipe may start with `extends: other.yaml`
// (a path relative to its own folder): the parent is loaded first and the child's keys override
// it. Command-line overrides `section.key=value` come last, then the whole recipe is validated.
// Every problem is an infllm::Error naming the file (or "command line"), the key, the bad value
// and how to fix it.
//
// The parser fills the libraries' own config structs: the model's shape, its attention options
// and the checkpointing switches go straight into layers' ModelConfig, optim: into AdamWOptions,
// schedule: into LrSchedule; only the training run's own settings are defined here. The field
// table in recipe_schema.h says which key lands in which field.
//
// Checkpoint convention (shared with the checkpoint writer, train/checkpoint.h): a run writes
// <out_dir>/checkpoints/step_XXXXXXXX.h5; a path whose last component is `latest` means the
// newest step_*.h5 in that folder.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/enum_names.h"
#include "layers/model_config.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"

namespace infllm::train {

enum class DeviceChoice { automatic, cpu, cuda };  // "auto": cuda when a GPU is present
enum class Precision { bf16, f32 };

// The names recipes use: "auto", "cpu", "cuda" (train.device); "bf16", "f32" (train.precision).
std::span<const EnumName<DeviceChoice>> enum_names(DeviceChoice);
std::span<const EnumName<Precision>> enum_names(Precision);
std::string_view to_string(DeviceChoice device);
std::string_view to_string(Precision precision);

// The data.train / data.val value that means synthetic uniform tokens (for benchmarks).
inline constexpr std::string_view kRandomData = "random";

struct DataConfig {
  std::string train;   // required: token file (.h5), or "random"
  std::string val;     // optional: empty = no validation data
  int seq_len = 0;     // required
  int batch_size = 0;  // required: sequences per rank per micro-batch
  int grad_accum = 1;
  int prefetch = 2;  // batches prepared ahead by the loader thread
  // Share of training windows replaced by synthetic long-context tasks of the same length
  // (data/synthetic_tasks.h), of the kinds listed ("passkey", "needle").
  double task_rate = 0;
  std::vector<std::string> task_kinds = {"passkey", "needle"};
  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
  int64_t steps = 0;    // required: optimizer steps
  std::string out_dir;  // required: the run folder
  uint64_t seed = 1234;
  DeviceChoice device = DeviceChoice::automatic;
  Precision precision = Precision::bf16;  // the CPU backend always computes f32
  // train.activation_checkpointing and train.recompute_attention live in model (ModelConfig).
  int64_t eval_every = 0;  // steps between evaluations on data.val; 0 = never
  int eval_batches = 20;
  int max_bad_steps = 10;     // non-finite steps (skipped) tolerated before the run stops
  std::string init_from;      // checkpoint whose weights start the run (finetune); empty = none
  bool init_partial = false;  // init_from loads only the matching weights (else: all or error)
  bool operator==(const TrainConfig&) const = default;
};

struct CheckpointConfig {
  int64_t every = 1000;  // N > 0: every N steps and at the last step; 0 = no checkpoints
  int keep_last = 3;
  bool operator==(const CheckpointConfig&) const = default;
};

struct LogConfig {
  int64_t every = 10;
  bool tensorboard = true;
  bool progress = true;  // the live progress line on a terminal
  bool operator==(const LogConfig&) const = default;
};

struct DistributedConfig {
  std::string init = "env";  // "env" (launcher variables) or "file:PATH" (shared file)
  int zero = 0;              // 1 = shard optimizer state across ranks
  int bucket_mb = 25;        // gradient all-reduce bucket size
  int timeout_s = 300;       // a collective slower than this is an error, not a hang
  bool operator==(const DistributedConfig&) const = default;
};

struct Recipe {
  // model: keys, attention: keys (model.attention.mode and model.attention.sparse), and
  // train.activation_checkpointing / train.recompute_attention. n_kv_heads and head_dim are
  // resolved (with_derived_sizes) once the recipe is validated.
  ModelConfig model;
  DataConfig data;
  AdamWOptions optim;   // optim: keys; grad_clip is applied by the training step
  LrSchedule schedule;  // schedule: keys; the peak lr is optim.lr, the length train.steps
  TrainConfig train;
  CheckpointConfig checkpoint;
  LogConfig log;
  DistributedConfig distributed;
  bool operator==(const Recipe&) const = default;
};

struct ValidateOptions {
  // Check that data.train, data.val and train.init_from exist. Off only for tools that inspect
  // a recipe without running it.
  bool check_files = true;
};

// Loads `path` (following extends), applies `overrides` ("section.key=value", the value a YAML
// scalar or flow node such as [a, b]), fills derived defaults (n_kv_heads, head_dim) and
// validates. Relative data and output paths stay relative: they resolve against the current
// directory, not the recipe's folder.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides,
                   const ValidateOptions& options = {});

// A recipe held as text (a checkpoint's resolved recipe): the same checks as load_recipe, with
// `source` naming it in messages. `extends` is not allowed here.
Recipe recipe_from_yaml(const std::string& text, const std::string& source,
                        const ValidateOptions& options = {});

// The fully resolved recipe as YAML; loading that text back gives an equal Recipe.
std::string recipe_to_yaml(const Recipe& recipe);

// Checks every value and every relation between values; `source` names where the recipe came
// from in the messages.
void validate_recipe(const Recipe& recipe, const std::string& source,
                     const ValidateOptions& options = {});

// The checkpoint file a path names: the path itself, or for .../latest the newest
// step_XXXXXXXX.h5 in that folder. Throws when there is none.
std::string resolve_checkpoint_path(const std::string& path);

}  // namespace infllm::train
