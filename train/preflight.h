// Everything a training run checks before it allocates a model or writes into its folder: the
// data files (layout, length, every token against model.vocab_size) and a memory estimate
// against host and GPU memory. A run that cannot work fails here, in seconds, naming the key.
#pragma once

#include "core/device.h"
#include "distributed/launch_env.h"
#include "train/recipe.h"

namespace infllm::train {

// Rank r of a data-parallel run reads its share of data.train (the ranks together read all of
// it); rank 0 alone reads data.val, which only rank 0 evaluates. Not collective.
void check_before_training(const Recipe& recipe, const distributed::LaunchEnv& env, Device device);

// A finetune's data must be in the tokenizer of the model it starts from: when
// train.init_from names a model whose tokenizer is known (hf:DIR's tokenizer.json, or a
// checkpoint's, followed through earlier finetunes: train/tokenizer_files.h) and the
// `tokenizer` attribute of data.train (and, with `check_val`, data.val) is known ("byte" or
// hf-tokenizer:...), the two must be the same; otherwise an infllm::Error naming both
// tokenizers, both files and how to prepare the data. Silent when either side is unknown.
void check_data_tokenizers(const Recipe& recipe, bool check_val);

// The device this process will train on, known before any collective: choose_device for one
// process, the local rank's GPU for several (Replicas refuses several ranks without GPUs).
Device training_device(const Recipe& recipe, const distributed::LaunchEnv& env);

}  // namespace infllm::train
