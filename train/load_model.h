// Weights back from a checkpoint, strictly: every model parameter present with its shape and
// f32 dtype and every weight in the file used, or an error listing all differences. A partial
// load (train.init_partial, e.g. growing a model) is an explicit option, never the default.
// load_model rebuilds a trained model for eval and generate: the checkpoint carries its resolved
// recipe, so the model gets the same shape, and its f32 master weights are cast to the compute
// dtype.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "layers/module.h"
#include "layers/transformer.h"
#include "train/checkpoint.h"
#include "train/recipe.h"

namespace infllm::train {

// Checkpoints hold the weights as the optimizer's f32 master copies under this prefix, the
// AdamW moments under optim/exp_avg/ and optim/exp_avg_sq/.
inline constexpr const char* kMasterPrefix = "optim/master/";

// Parameter name -> f32 weights of a checkpoint (loaded with or without kMasterPrefix filter).
std::map<std::string, Tensor> master_weights(const CheckpointState& state);

// How the tensors under one prefix of a checkpoint line up with a model's parameters (each
// expected f32, of its parameter's shape). Names are parameter names (without the prefix).
struct WeightMatch {
  std::vector<std::string> matched;
  std::vector<std::string> missing;     // parameters the checkpoint has no tensor for
  std::vector<std::string> unexpected;  // checkpoint tensors no parameter takes
  std::vector<std::string> mismatched;  // "name: checkpoint [a, b] f32, model [c, d] f32"
  bool exact() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // "2 missing, 1 unexpected, 1 of another shape or dtype" and one line per difference.
  std::string differences(std::string_view prefix) const;
};
WeightMatch match_weights(const CheckpointState& state, std::string_view prefix,
                          const std::vector<NamedParameter>& params);

// Hands each matched master weight of `state` to `assign(name, f32 tensor)`. Strict unless
// `partial`: any difference is an infllm::Error that starts with `what`, names the file, lists
// every difference and ends with `fix`. With `partial`, only the matched weights are assigned
// and the returned match says what was skipped (the caller reports it).
WeightMatch load_master_weights(
    const CheckpointState& state, const std::vector<NamedParameter>& params, bool partial,
    const std::string& what, const std::string& fix,
    const std::function<void(const std::string&, const Tensor&)>& assign);

struct LoadedModel {
  Recipe recipe;
  Device device;
  int64_t step = 0;
  std::string path;                            // the checkpoint file read
  std::map<std::string, std::string> strings;  // its string attributes (recipe, tokenizer, ..)
  std::unique_ptr<TransformerLM> model;
};

// `path` may be a checkpoint file or a run's checkpoints/latest; `device` is auto|cpu|cuda[:N].
// Strict: the weights must be exactly those of the checkpoint's own recipe.
LoadedModel load_model(const std::string& path, const std::string& device);

}  // namespace infllm::train
