// A trained model back from a checkpoint, for eval and generate: the checkpoint carries its
// resolved recipe, so the model is rebuilt with the same shape and its f32 master weights are
// cast to the compute dtype.
#pragma once

#include <memory>
#include <string>

#include <map>

#include "layers/transformer.h"
#include "train/checkpoint.h"
#include "train/recipe.h"

namespace infllm::train {

// Checkpoints hold the weights as the optimizer's f32 master copies under this prefix.
inline constexpr const char* kMasterPrefix = "optim/master/";

// Parameter name -> f32 weights of a checkpoint (loaded with or without kMasterPrefix filter).
std::map<std::string, Tensor> master_weights(const CheckpointState& state);

struct LoadedModel {
  Recipe recipe;
  Device device;
  int64_t step = 0;
  std::unique_ptr<TransformerLM> model;
};

// `path` may be a checkpoint file or a run's checkpoints/latest; `device` is auto|cpu|cuda[:N].
LoadedModel load_model(const std::string& path, const std::string& device);

}  // namespace infllm::train
