#include "train/load_model.h"

#include "core/ops.h"
#include "train/checkpoint.h"
#include "train/run_setup.h"

namespace infllm::train {

std::map<std::string, Tensor> master_weights(const CheckpointState& state) {
  std::map<std::string, Tensor> weights;
  std::string prefix = kMasterPrefix;
  for (const auto& [name, tensor] : state.tensors) {
    if (name.rfind(prefix, 0) == 0) weights[name.substr(prefix.size())] = tensor;
  }
  return weights;
}

LoadedModel load_model(const std::string& path_spec, const std::string& device) {
  std::string path = resolve_checkpoint_path(path_spec);
  LoadedModel loaded;
  loaded.device = parse_device(device);
  CheckpointState state = load_checkpoint(path, loaded.device, kMasterPrefix);
  auto recipe_text = state.strings.find("recipe");
  INFLLM_CHECK(recipe_text != state.strings.end(), path,
               ": no `recipe` attribute (not a "
               "checkpoint written by infllm train?)");
  loaded.recipe = recipe_from_yaml(recipe_text->second, path + " (saved recipe)", {false});
  loaded.step = state.step;
  DType dtype = compute_dtype(loaded.recipe, loaded.device);
  loaded.model =
      std::make_unique<TransformerLM>(model_config(loaded.recipe), 0, loaded.device, dtype);
  std::map<std::string, Tensor> weights = master_weights(state);
  for (auto& [name, param] : loaded.model->named_parameters()) {
    auto it = weights.find(name);
    INFLLM_CHECK(it != weights.end(), path, ": no weights for ", name);
    INFLLM_CHECK(it->second.shape() == param->shape(), path, ": ", name, " has shape ",
                 shape_str(it->second.shape()), ", the recipe's model expects ",
                 shape_str(param->shape()));
    Tensor value = ops::cast(it->second.to(loaded.device), dtype);
    copy_into(value, *param);
  }
  return loaded;
}

}  // namespace infllm::train
