#include "train/load_model.h"

#include <algorithm>
#include <set>

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

std::string WeightMatch::differences(std::string_view prefix) const {
  std::string out = std::to_string(missing.size()) + " missing from the checkpoint, " +
                    std::to_string(unexpected.size()) + " in the checkpoint but not the model, " +
                    std::to_string(mismatched.size()) + " of another shape or dtype:";
  const std::string p(prefix);
  for (const std::string& name : missing) out += "\n  missing:    " + p + name;
  for (const std::string& name : unexpected) out += "\n  unexpected: " + p + name;
  for (const std::string& line : mismatched) out += "\n  mismatched: " + p + line;
  return out;
}

WeightMatch match_weights(const CheckpointState& state, std::string_view prefix,
                          const std::vector<NamedParameter>& params) {
  std::map<std::string, const Tensor*> saved;
  for (const auto& [name, tensor] : state.tensors) {
    if (name.starts_with(prefix)) saved[name.substr(prefix.size())] = &tensor;
  }
  WeightMatch match;
  std::set<std::string> taken;
  for (const auto& [name, param] : params) {
    taken.insert(name);
    const auto found = saved.find(name);
    if (found == saved.end()) {
      match.missing.push_back(name);
      continue;
    }
    const Tensor& tensor = *found->second;
    if (tensor.shape() == param->shape() && tensor.dtype() == DType::f32) {
      match.matched.push_back(name);
      continue;
    }
    match.mismatched.push_back(name + ": checkpoint " + shape_str(tensor.shape()) + " " +
                               dtype_name(tensor.dtype()) + ", model " + shape_str(param->shape()) +
                               " f32");
  }
  for (const auto& [name, tensor] : saved) {
    if (!taken.contains(name)) match.unexpected.push_back(name);
  }
  return match;
}

WeightMatch load_master_weights(
    const CheckpointState& state, const std::vector<NamedParameter>& params, bool partial,
    const std::string& what, const std::string& fix,
    const std::function<void(const std::string&, const Tensor&)>& assign) {
  WeightMatch match = match_weights(state, kMasterPrefix, params);
  INFLLM_CHECK(partial || match.exact(), what, ": the weights of checkpoint '", state.source,
               "' do not fit the model: ", match.differences(kMasterPrefix), "\n", fix);
  INFLLM_CHECK(!match.matched.empty(), what, ": no weight of checkpoint '", state.source,
               "' fits the model: ", match.differences(kMasterPrefix), "\n", fix);
  const std::set<std::string> matched(match.matched.begin(), match.matched.end());
  for (const auto& [name, tensor] : state.tensors) {
    if (!name.starts_with(kMasterPrefix)) continue;
    const std::string param = name.substr(std::string_view(kMasterPrefix).size());
    if (matched.contains(param)) assign(param, tensor);
  }
  return match;
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
  loaded.path = path;
  loaded.strings = state.strings;
  DType dtype = compute_dtype(loaded.recipe, loaded.device);
  loaded.model = std::make_unique<TransformerLM>(loaded.recipe.model, 0, loaded.device, dtype);
  const std::vector<NamedParameter> params = loaded.model->named_parameters();
  const std::map<std::string, Tensor*> by_name(params.begin(), params.end());
  load_master_weights(state, params, /*partial=*/false, "loading " + path,
                      "The checkpoint's weights must be those of its own 'recipe' attribute; "
                      "was the file written by another tool, or edited?",
                      [&](const std::string& name, const Tensor& weights) {
                        copy_into(ops::cast(weights.to(loaded.device), dtype), *by_name.at(name));
                      });
  return loaded;
}

}  // namespace infllm::train
