// Hugging Face Llama interop on files the test writes itself: config.json both ways and the
// error of each unsupported field, the weight names and layouts, and an export -> import round
// trip that gives identical weights and identical logits. (tests/train/check_hf_roundtrip.py
// checks the same against real transformers.)
#include "train/hf_model.h"

#include <gtest/gtest.h>

#include <fstream>

#include "autograd/node.h"
#include "layers/transformer.h"
#include "tests/data/test_util.h"

namespace infllm::train {
namespace {

using data::testing::expect_error;
using data::testing::TempDir;

ModelConfig tiny(bool tied) {
  ModelConfig c;
  c.vocab_size = 40;
  c.d_model = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;  // n_heads * head_dim != d_model: the projections' shapes must say so
  c.ffn_hidden = 36;
  c.rope_theta = 50000.0;
  c.norm_eps = 1e-6;
  c.tie_embeddings = tied;
  return with_derived_sizes(c);
}

std::string llama_json(const std::string& extra) {
  return R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 100)" +
         extra + "}";
}

TEST(HfConfig, RoundTripsBothWays) {
  for (bool tied : {false, true}) {
    const ModelConfig c = tiny(tied);
    const ModelConfig back = model_config_from_hf(hf_config_json(c, "float32", "{}"), "c.json");
    EXPECT_EQ(back, c);
    EXPECT_TRUE(model_differences(c, back).empty());
  }
}

TEST(HfConfig, ReadsTransformersDefaults) {
  const ModelConfig c = model_config_from_hf(
      llama_json(R"(, "rope_scaling": null, "hidden_act": "silu", "bos_token_id": 1)"), "c.json");
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_embeddings);
  const ModelConfig g = model_config_from_hf(
      llama_json(R"(, "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
      "tie_word_embeddings": true, "head_dim": 32)"),
      "c.json");
  EXPECT_EQ(g.n_kv_heads, 2);
  EXPECT_EQ(g.head_dim, 32);
  EXPECT_EQ(g.norm_eps, 1e-5);
  EXPECT_EQ(g.rope_theta, 500000.0);
  EXPECT_TRUE(g.tie_embeddings);
}

TEST(HfConfig, EachUnsupportedFieldIsNamed) {
  auto bad = [](const std::string& json, std::initializer_list<std::string_view> parts) {
    expect_error([&] { model_config_from_hf(json, "dir/config.json"); }, parts);
    expect_error([&] { model_config_from_hf(json, "dir/config.json"); }, {"dir/config.json"});
  };
  bad(R"({"model_type": "mistral"})", {"model_type", "mistral"});
  bad(R"({"hidden_size": 64})", {"model_type"});
  bad(llama_json(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})"), {"rope_scaling"});
  bad(llama_json(R"(, "hidden_act": "gelu")"), {"hidden_act", "gelu"});
  bad(llama_json(R"(, "attention_bias": true)"), {"attention_bias"});
  bad(llama_json(R"(, "mlp_bias": true)"), {"mlp_bias"});
  bad(llama_json(R"(, "pretraining_tp": 2)"), {"pretraining_tp"});
  bad(llama_json(R"(, "num_key_value_heads": 3)"), {"num_key_value_heads"});
  bad(llama_json(R"(, "tie_word_embeddings": "sometimes")"), {"tie_word_embeddings"});
  bad(R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 96})",
      {"vocab_size", "missing"});
  bad(R"({"model_type": "llama", "hidden_size": "big", "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 100})",
      {"hidden_size", "whole number"});
  bad(R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 0,
    "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 100})",
      {"num_hidden_layers", "positive"});
  bad("{\"model_type\": ", {"not valid JSON"});
  bad("[1]", {"not a JSON object"});
}

TEST(HfConfig, DifferencesNameTheModelKeys) {
  ModelConfig a = tiny(false), b = tiny(false);
  b.d_model = 32;
  b.tie_embeddings = true;
  const std::vector<std::string> d = model_differences(a, b);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0], "model.d_model: recipe 24, config.json 32");
  EXPECT_EQ(d[1], "model.tie_embeddings: recipe false, config.json true");
}

std::map<std::string, Tensor> params_of(TransformerLM& model) {
  std::map<std::string, Tensor> out;
  for (auto& [name, param] : model.named_parameters()) out[name] = *param;
  return out;
}

TEST(HfWeights, NamesAndLayouts) {
  const ModelConfig c = tiny(false);
  TransformerLM model(c, 7, Device::cpu(), DType::f32);
  const auto params = params_of(model);
  const auto hf = to_hf_weights(c, params);
  const std::map<std::string, Tensor> by_name(hf.begin(), hf.end());
  EXPECT_EQ(hf.size(), 3u + 9u * 2u);
  const Tensor qkv = params.at("blocks.1.attention.wqkv.weight");
  const std::vector<float> all = qkv.to_vector<float>();
  const int64_t d = c.d_model, q = 4 * 8, kv = 2 * 8;
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.q_proj.weight").shape(), (Shape{q, d}));
  const std::vector<float> v =
      by_name.at("model.layers.1.self_attn.v_proj.weight").to_vector<float>();
  EXPECT_EQ(v, std::vector<float>(all.begin() + (q + kv) * d, all.end()));
  const std::vector<float> up = by_name.at("model.layers.0.mlp.up_proj.weight").to_vector<float>();
  const std::vector<float> gate_up = params.at("blocks.0.mlp.gate_up.weight").to_vector<float>();
  EXPECT_EQ(up, std::vector<float>(gate_up.begin() + 36 * d, gate_up.end()));
  EXPECT_TRUE(by_name.contains("lm_head.weight"));
  EXPECT_FALSE(to_hf_weights(tiny(true), params_of(*std::make_unique<TransformerLM>(
                                             tiny(true), 1, Device::cpu(), DType::f32)))
                   .back()
                   .first.starts_with("lm_head"));
}

// Export (to_hf_weights, write_safetensors, config.json) then import (read_hf_model): the same
// weights bit for bit, and the same logits from a model rebuilt from them.
TEST(HfWeights, ExportImportRoundTripGivesIdenticalLogits) {
  autograd::NoGradGuard no_grad;
  for (bool tied : {false, true}) {
    TempDir dir;
    const ModelConfig c = tiny(tied);
    TransformerLM model(c, 11, Device::cpu(), DType::f32);
    const auto params = params_of(model);
    write_safetensors(dir.file("model.safetensors"), to_hf_weights(c, params), DType::f32,
                      {{"format", "pt"}});
    std::ofstream(dir.file("config.json")) << hf_config_json(c, "float32", "");
    const HfModel imported = read_hf_model("hf:" + dir.path().string());
    EXPECT_EQ(imported.config, c);
    ASSERT_EQ(imported.weights.size(), params.size());
    TransformerLM rebuilt(imported.config, 99, Device::cpu(), DType::f32);
    for (auto& [name, param] : rebuilt.named_parameters()) {
      EXPECT_EQ(imported.weights.at(name).to_vector<float>(), params.at(name).to_vector<float>())
          << name;
      copy_into(imported.weights.at(name), *param);
    }
    const Tensor tokens = Tensor::from_vector<int32_t>({1, 5, 39, 0, 7, 7, 22, 3}, {1, 8});
    EXPECT_EQ(rebuilt.logits(tokens).to_vector<float>(), model.logits(tokens).to_vector<float>());
  }
}

TEST(HfWeights, ImportListsEveryDifference) {
  TempDir dir;
  const ModelConfig c = tiny(false);
  TransformerLM model(c, 3, Device::cpu(), DType::f32);
  auto hf = to_hf_weights(c, params_of(model));
  hf.erase(hf.begin() + 1);  // model.layers.0.input_layernorm.weight
  hf.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq",
                  Tensor::from_vector<float>({1}, {1}));
  hf[2].second = Tensor::from_vector<float>({1, 2}, {2, 1});  // q_proj of another shape
  write_safetensors(dir.file("model.safetensors"), hf, DType::bf16);
  std::ofstream(dir.file("config.json")) << hf_config_json(c, "bfloat16", "");
  expect_error([&] { read_hf_model(dir.path().string()); },
               {"missing:    model.layers.0.input_layernorm.weight",
                "unexpected: model.layers.0.self_attn.rotary_emb.inv_freq",
                "mismatched: model.layers.0.self_attn.k_proj.weight", dir.path().string()});
}

TEST(HfWeights, ExportRefusesWeightsLlamaHasNot) {
  const ModelConfig c = tiny(false);
  TransformerLM model(c, 3, Device::cpu(), DType::f32);
  auto params = params_of(model);
  params["blocks.0.attention.nsa.gate.weight"] = Tensor::from_vector<float>({1}, {1});
  expect_error([&] { to_hf_weights(c, params); }, {"blocks.0.attention.nsa.gate.weight", "NSA"});
}

}  // namespace
}  // namespace infllm::train
