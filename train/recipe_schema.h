// Internal to train/recipe*.cpp: the recipe's schema (every key of every section and the
// struct field it fills) and where each value came from, shared by the loader
// (recipe_load.cpp), the validator (recipe_validate.cpp) and the writer (recipe_write.cpp).
#pragma once

#include <initializer_list>
#include <map>
#include <string>
#include <string_view>

#include "train/recipe.h"

namespace infllm::train::recipe_schema {

// ---- The schema: every key of every section, in the order recipe_to_yaml writes them ----

struct FieldKey {
  const char* section;
  const char* name;
  bool required = false;
};

constexpr bool kRequired = true;

// A model size that ModelConfig holds as int64_t but the kernels take as int: read as an int,
// so an absurd value is an out-of-range error naming the key.
template <class I>
struct IntSized {
  I& value;
};
template <class I>
IntSized<I> int_sized(I& value) {
  return {value};
}
template <class T>
constexpr bool kIsIntSized = false;
template <class I>
constexpr bool kIsIntSized<IntSized<I>> = true;

inline std::string key_path(const FieldKey& key) {
  return std::string(key.section) + "." + key.name;
}

// Calls visit(FieldKey, field) for each field; R is Recipe or const Recipe. This one list drives
// parsing, writing and the unknown-key check, so a new key is added here and in the struct. It
// is also the map from keys to the libraries' structs: attention.topk is
// r.model.attention.sparse.topk, the SparseConfig the attention op and its kernels read.
template <class R, class Visit>
void visit_fields(R& r, Visit&& visit) {
  visit(FieldKey{"model", "vocab_size"}, int_sized(r.model.vocab_size));
  visit(FieldKey{"model", "d_model", kRequired}, int_sized(r.model.d_model));
  visit(FieldKey{"model", "n_layers", kRequired}, int_sized(r.model.n_layers));
  visit(FieldKey{"model", "n_heads", kRequired}, int_sized(r.model.n_heads));
  visit(FieldKey{"model", "n_kv_heads"}, int_sized(r.model.n_kv_heads));
  visit(FieldKey{"model", "head_dim"}, int_sized(r.model.head_dim));
  visit(FieldKey{"model", "ffn_hidden", kRequired}, int_sized(r.model.ffn_hidden));
  visit(FieldKey{"model", "rope_theta"}, r.model.rope_theta);
  visit(FieldKey{"model", "tie_embeddings"}, r.model.tie_embeddings);
  visit(FieldKey{"model", "norm_eps"}, r.model.norm_eps);
  visit(FieldKey{"model", "init_std"}, r.model.init_std);

  visit(FieldKey{"attention", "mode"}, r.model.attention.mode);
  visit(FieldKey{"attention", "kernel_size"}, r.model.attention.sparse.kernel_size);
  visit(FieldKey{"attention", "kernel_stride"}, r.model.attention.sparse.kernel_stride);
  visit(FieldKey{"attention", "block_size"}, r.model.attention.sparse.block_size);
  visit(FieldKey{"attention", "init_blocks"}, r.model.attention.sparse.init_blocks);
  visit(FieldKey{"attention", "window_size"}, r.model.attention.sparse.window_size);
  visit(FieldKey{"attention", "topk"}, r.model.attention.sparse.topk);
  visit(FieldKey{"attention", "dense_len"}, r.model.attention.sparse.dense_len);
  visit(FieldKey{"attention", "lse_stride"}, r.model.attention.sparse.lse_stride);
  visit(FieldKey{"attention", "variant"}, r.model.attention.variant);
  visit(FieldKey{"attention", "nsa_window"}, r.model.attention.nsa.window_size);

  visit(FieldKey{"data", "train", kRequired}, r.data.train);
  visit(FieldKey{"data", "val"}, r.data.val);
  visit(FieldKey{"data", "seq_len", kRequired}, r.data.seq_len);
  visit(FieldKey{"data", "batch_size", kRequired}, r.data.batch_size);
  visit(FieldKey{"data", "grad_accum"}, r.data.grad_accum);
  visit(FieldKey{"data", "prefetch"}, r.data.prefetch);
  visit(FieldKey{"data", "task_rate"}, r.data.task_rate);
  visit(FieldKey{"data", "task_kinds"}, r.data.task_kinds);

  visit(FieldKey{"optim", "lr"}, r.optim.lr);
  visit(FieldKey{"optim", "weight_decay"}, r.optim.weight_decay);
  visit(FieldKey{"optim", "beta1"}, r.optim.beta1);
  visit(FieldKey{"optim", "beta2"}, r.optim.beta2);
  visit(FieldKey{"optim", "eps"}, r.optim.eps);
  visit(FieldKey{"optim", "grad_clip"}, r.optim.grad_clip);
  visit(FieldKey{"optim", "no_decay"}, r.optim.no_decay);

  visit(FieldKey{"schedule", "kind"}, r.schedule.kind);
  visit(FieldKey{"schedule", "warmup_steps"}, r.schedule.warmup_steps);
  visit(FieldKey{"schedule", "min_lr_ratio"}, r.schedule.min_lr_ratio);
  visit(FieldKey{"schedule", "decay_fraction"}, r.schedule.decay_fraction);

  visit(FieldKey{"train", "steps", kRequired}, r.train.steps);
  visit(FieldKey{"train", "out_dir", kRequired}, r.train.out_dir);
  visit(FieldKey{"train", "seed"}, r.train.seed);
  visit(FieldKey{"train", "device"}, r.train.device);
  visit(FieldKey{"train", "precision"}, r.train.precision);
  visit(FieldKey{"train", "activation_checkpointing"}, r.model.activation_checkpointing);
  visit(FieldKey{"train", "recompute_attention"}, r.model.recompute_attention);
  visit(FieldKey{"train", "eval_every"}, r.train.eval_every);
  visit(FieldKey{"train", "eval_batches"}, r.train.eval_batches);
  visit(FieldKey{"train", "max_bad_steps"}, r.train.max_bad_steps);
  visit(FieldKey{"train", "init_from"}, r.train.init_from);
  visit(FieldKey{"train", "init_partial"}, r.train.init_partial);

  visit(FieldKey{"checkpoint", "every"}, r.checkpoint.every);
  visit(FieldKey{"checkpoint", "keep_last"}, r.checkpoint.keep_last);

  visit(FieldKey{"log", "every"}, r.log.every);
  visit(FieldKey{"log", "tensorboard"}, r.log.tensorboard);
  visit(FieldKey{"log", "progress"}, r.log.progress);

  visit(FieldKey{"distributed", "init"}, r.distributed.init);
  visit(FieldKey{"distributed", "zero"}, r.distributed.zero);
  visit(FieldKey{"distributed", "bucket_mb"}, r.distributed.bucket_mb);
  visit(FieldKey{"distributed", "timeout_s"}, r.distributed.timeout_s);
}

// ---- Where a value came from ----

inline constexpr std::string_view kCommandLine = "command line";

// "in recipes/x.yaml" or "on the command line".
inline std::string where(std::string_view source) {
  if (source == kCommandLine) return "on the command line";
  return "in " + std::string(source);
}

// Where each key's value was set, for messages; keys never set come from `fallback`'s defaults.
struct Origins {
  std::string fallback;
  std::map<std::string, std::string> by_key;

  // Where the first of `keys` that was set explicitly came from: a rule between several keys is
  // blamed on the file that set one of them, the key the message names first.
  template <class Keys>
  std::string of(const Keys& keys) const {
    for (std::string_view key : keys) {
      const auto it = by_key.find(std::string(key));
      if (it != by_key.end()) return where(it->second);
    }
    return where(fallback);
  }
  std::string of(std::initializer_list<std::string_view> keys) const {
    return of<std::initializer_list<std::string_view>>(keys);
  }
};

// Checks every value and every relation between values (recipe_validate.cpp), each message
// naming the file that set the key.
void check_recipe(const Recipe& recipe, const Origins& origins, const ValidateOptions& options);

}  // namespace infllm::train::recipe_schema
