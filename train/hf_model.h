// Hugging Face Llama interop: config.json <-> ModelConfig, and our parameter names and layouts
// <-> LlamaForCausalLM's (docs/interop.md). Both models rotate q and k by RoPE in the
// rotate-half convention (pairs i and i + D/2 of each head), so q_proj and k_proj need no row
// permutation; they are the q and k row blocks of our fused wqkv, and gate_proj/up_proj the two
// halves of our fused gate_up.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/model_config.h"
#include "train/recipe.h"
#include "train/safetensors.h"
#include "train/tokenizer_files.h"

namespace infllm::train {

// config.json text -> the model's shape (attention options left at their defaults). Anything
// infllm cannot reproduce - another model_type, rope_scaling, biases, another activation - is an
// infllm::Error naming `source` and the field. Keys without effect on the forward pass (token
// ids, max_position_embeddings, transformers_version, ...) are ignored.
ModelConfig model_config_from_hf(const std::string& json, const std::string& source);

// config.json for `config`: LlamaForCausalLM, model_type llama, torch_dtype, the tokenizer's
// special token ids, and `infllm_attention` (a JSON object) recorded for tools that know the
// sparse settings.
std::string hf_config_json(const ModelConfig& config, const std::string& torch_dtype,
                           const std::string& infllm_attention, const SpecialTokenIds& ids = {});
// The recipe's attention section as a JSON object (for infllm_attention).
std::string attention_json(const Recipe& recipe);
// generation_config.json with the tokenizer's BOS, EOS and pad ids (greedy by default).
std::string hf_generation_config_json(const SpecialTokenIds& ids = {});

// Our parameters (name -> f32 weights) as LlamaForCausalLM's tensors, by HF name.
std::vector<std::pair<std::string, Tensor>> to_hf_weights(
    const ModelConfig& config, const std::map<std::string, Tensor>& params);
// LlamaForCausalLM's tensors as our parameters. Every parameter must come from a tensor of the
// right shape and every tensor be used (a tied model's lm_head, if saved, must equal
// embed_tokens); otherwise an infllm::Error listing each difference.
std::map<std::string, Tensor> from_hf_weights(const ModelConfig& config, const Safetensors& hf,
                                              const std::string& source);

struct HfModel {
  ModelConfig config;
  std::map<std::string, Tensor> weights;  // our parameter names, f32 on the CPU
  std::string attention_json;             // config.json's infllm_attention, or empty
};
// A model folder (config.json and model.safetensors or its shards). `dir` may start with hf:.
HfModel read_hf_model(const std::string& dir);
// config.json of a model folder, mapped.
ModelConfig read_hf_config(const std::string& dir);

// The model keys where a recipe's model differs from an imported one's, e.g.
// "model.d_model: recipe 128, config.json 256"; empty when they agree.
std::vector<std::string> model_differences(const ModelConfig& recipe, const ModelConfig& hf);

// A recipe for an imported model: its shape, attention settings from infllm_attention when
// present, and placeholders for the data and run keys (set them to train from it).
Recipe imported_recipe(const HfModel& model, const std::string& dir);

// "hf:/path" -> "/path"; other strings unchanged.
std::string strip_hf_prefix(const std::string& spec);

}  // namespace infllm::train
