// validate_recipe: every value and every relation between values, each failure an Error that
// names the key, the file that set it and how to fix it.
#include <filesystem>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/infllm_v2.h"
#include "attention/nsa.h"
#include "core/config_check.h"
#include "core/error.h"
#include "train/hf_model.h"
#include "train/recipe.h"
#include "train/recipe_schema.h"

namespace infllm::train {
namespace fs = std::filesystem;

namespace recipe_schema {
namespace {

class Validator {
 public:
  Validator(const Recipe& recipe, const Origins& origins, const ValidateOptions& options)
      : r_(recipe), origins_(origins), options_(options) {}

  void run() {
    check_model();
    check_attention();
    check_data();
    check_optim_and_schedule();
    check_train();
    check_distributed();
  }

 private:
  // A failed check: "<key>: <problem> in <file>; <fix>".
  template <class... Parts>
  void require(bool ok, std::string_view key, std::string_view problem, const Parts&... fix) {
    if (!ok) fail(key, ": ", problem, " ", origins_.of({key}), "; ", fix...);
  }

  // A failed rule between keys: named by keys[0], blamed on whichever of them was set.
  template <class... Parts>
  void require_related(bool ok, std::initializer_list<std::string_view> keys,
                       std::string_view problem, const Parts&... fix) {
    if (!ok) fail(*keys.begin(), ": ", problem, " ", origins_.of(keys), "; ", fix...);
  }

  template <class T>
  void positive(const std::string& key, T value) {
    require(value > 0, key, "must be positive, got " + number(value), "set ", key,
            " to a value greater than 0");
  }

  template <class T>
  void non_negative(const std::string& key, T value) {
    require(value >= 0, key, "must be 0 or more, got " + number(value), "set ", key,
            " to a value of 0 or more");
  }

  void in_range(const std::string& key, double value, double low, double high, bool open) {
    const bool ok = open ? value > low && value < high : value >= low && value <= high;
    require(ok, key,
            shortest_double(value) + " is outside " + (open ? "(" : "[") + shortest_double(low) +
                ", " + shortest_double(high) + (open ? ")" : "]"),
            "pick a value in that range");
  }

  template <class T>
  static std::string number(T value) {
    if constexpr (std::is_floating_point_v<T>) return shortest_double(value);
    return std::to_string(value);
  }

  void check_model() {
    const ModelConfig& m = r_.model;
    positive("model.vocab_size", m.vocab_size);
    positive("model.d_model", m.d_model);
    positive("model.n_layers", m.n_layers);
    positive("model.n_heads", m.n_heads);
    non_negative("model.n_kv_heads", m.n_kv_heads);
    non_negative("model.head_dim", m.head_dim);
    positive("model.ffn_hidden", m.ffn_hidden);
    positive("model.rope_theta", m.rope_theta);
    positive("model.norm_eps", m.norm_eps);
    positive("model.init_std", m.init_std);
    if (m.head_dim == 0) {
      require_related(m.d_model % m.n_heads == 0, {"model.n_heads", "model.d_model"},
                      std::to_string(m.n_heads) + " does not divide model.d_model = " +
                          std::to_string(m.d_model) + " (head_dim is 0, meaning d_model / n_heads)",
                      "pick n_heads that divides d_model, or set model.head_dim");
    }
    const int64_t head_dim = m.head_dim ? m.head_dim : m.d_model / m.n_heads;
    require_related(
        head_dim % 2 == 0, {"model.head_dim", "model.d_model", "model.n_heads"},
        m.head_dim ? std::to_string(head_dim) + " is odd"
                   : "is 0, so d_model / n_heads = " + std::to_string(head_dim) + ", which is odd",
        "RoPE rotates pairs of features: make head_dim even");
    const int64_t kv_heads = m.n_kv_heads ? m.n_kv_heads : m.n_heads;
    require_related(
        m.n_heads % kv_heads == 0, {"model.n_kv_heads", "model.n_heads"},
        std::to_string(kv_heads) + " does not divide model.n_heads = " + std::to_string(m.n_heads),
        "each group of query heads shares one KV head: pick n_kv_heads dividing n_heads");
  }

  // A library's config rules (check_sparse_config, check_schedule) reported with recipe keys:
  // `key_of` maps a struct field to its key, and the origin is the file that set one of them.
  ConfigCheck recipe_check(std::function<std::string(std::string_view)> key_of) const {
    return ConfigCheck(std::move(key_of),
                       [this](const std::vector<std::string>& keys) { return origins_.of(keys); });
  }

  void check_attention() {
    auto key_of = [](std::string_view field) { return "attention." + std::string(field); };
    attention::check_sparse_config(r_.model.attention.sparse, recipe_check(key_of));
    if (r_.model.attention.variant == attention::AttentionVariant::nsa)
      attention::check_nsa_config(r_.model.attention.nsa, r_.model.attention.sparse,
                                  recipe_check(key_of));
  }

  void check_data() {
    const DataConfig& d = r_.data;
    require(!d.train.empty(), "data.train", "is empty",
            "name a token file written by infllm prepare, or `random` for benchmarks");
    require(d.seq_len >= 2, "data.seq_len", "must be at least 2, got " + std::to_string(d.seq_len),
            "a training window needs an input token and a next token to predict");
    positive("data.batch_size", d.batch_size);
    positive("data.grad_accum", d.grad_accum);
    positive("data.prefetch", d.prefetch);
    require(d.task_rate >= 0 && d.task_rate <= 1, "data.task_rate",
            "must be in [0, 1], got " + std::to_string(d.task_rate),
            "it is the share of training windows replaced by synthetic tasks");
    for (const std::string& kind : d.task_kinds)
      require(kind == "passkey" || kind == "needle", "data.task_kinds", "holds '" + kind + "'",
              "list passkey and/or needle");
    require(d.task_rate == 0 || !d.task_kinds.empty(), "data.task_kinds", "is empty",
            "list passkey and/or needle, or set data.task_rate: 0");
    if (!options_.check_files) return;
    check_token_file("data.train", d.train,
                     "run `infllm prepare -o " + d.train + " TEXT_FILES...` to create it");
    if (!d.val.empty())
      check_token_file("data.val", d.val,
                       "infllm prepare writes NAME.val.h5 beside NAME.h5; run it, or clear "
                       "data.val (data.val=) and set train.eval_every=0");
  }

  void check_token_file(const std::string& key, const std::string& path, const std::string& fix) {
    if (path == kRandomData) return;
    require(fs::is_regular_file(path), key, "file not found: " + path, fix,
            " (relative paths start at the current directory ", fs::current_path().string(), ")");
  }

  void check_optim_and_schedule() {
    const AdamWOptions& o = r_.optim;
    const LrSchedule& s = r_.schedule;
    positive("optim.lr", o.lr);
    non_negative("optim.weight_decay", o.weight_decay);
    in_range("optim.beta1", o.beta1, 0, 1, true);
    in_range("optim.beta2", o.beta2, 0, 1, true);
    positive("optim.eps", o.eps);
    non_negative("optim.grad_clip", o.grad_clip);
    check_schedule(s, o.lr, r_.train.steps, recipe_check([](std::string_view field) {
                     if (field == "peak_lr") return std::string("optim.lr");
                     if (field == "total_steps") return std::string("train.steps");
                     return "schedule." + std::string(field);
                   }));
  }

  void check_train() {
    const TrainConfig& t = r_.train;
    positive("train.steps", t.steps);
    require(!t.out_dir.empty(), "train.out_dir", "is empty",
            "name the run folder, e.g. train.out_dir=runs/my_run");
    non_negative("train.eval_every", t.eval_every);
    positive("train.eval_batches", t.eval_batches);
    non_negative("train.max_bad_steps", t.max_bad_steps);
    require_related(t.eval_every == 0 || !r_.data.val.empty(), {"train.eval_every", "data.val"},
                    "is " + std::to_string(t.eval_every) + " but data.val is empty",
                    "set data.val to a validation token file, or train.eval_every=0");
    non_negative("checkpoint.every", r_.checkpoint.every);
    positive("checkpoint.keep_last", r_.checkpoint.keep_last);
    positive("log.every", r_.log.every);
    if (!options_.check_files || t.init_from.empty()) return;
    if (t.init_from.starts_with("hf:")) return check_hf_init();
    try {
      resolve_checkpoint_path(t.init_from);
    } catch (const Error& error) {
      require(false, "train.init_from", error.what(),
              "train the recipe that writes it first (its checkpoints land in "
              "<out_dir>/checkpoints/), or point train.init_from at a checkpoint file");
    }
  }

  // The model section must be the Hugging Face model's shape (config.json): a recipe that
  // silently took another shape would train a different model than the one it names.
  void check_hf_init() {
    const std::string& spec = r_.train.init_from;
    std::vector<std::string> differences;
    try {
      differences = model_differences(r_.model, read_hf_config(spec));
    } catch (const Error& error) {
      require(false, "train.init_from", error.what(),
              "point train.init_from=hf:DIR at a Hugging Face Llama folder (config.json and "
              "model.safetensors)");
    }
    std::string list;
    for (const std::string& line : differences) list += "\n  " + line;
    require(differences.empty(), "train.init_from",
            "'" + spec + "': the recipe's model section differs from config.json:" + list,
            "\nset those model keys to config.json's values (docs/interop.md)");
  }

  void check_distributed() {
    const DistributedConfig& d = r_.distributed;
    require(d.init == "env" || (d.init.starts_with("file:") && d.init.size() > 5),
            "distributed.init", "\"" + d.init + "\" is neither env nor file:PATH",
            "use env (launcher variables such as RANK, WORLD_SIZE) or file:/shared/path");
    require(d.zero == 0 || d.zero == 1, "distributed.zero",
            "must be 0 or 1, got " + std::to_string(d.zero),
            "0 replicates optimizer state, 1 shards it across ranks");
    positive("distributed.bucket_mb", d.bucket_mb);
    positive("distributed.timeout_s", d.timeout_s);
  }

  const Recipe& r_;
  const Origins& origins_;
  const ValidateOptions& options_;
};

}  // namespace

void check_recipe(const Recipe& recipe, const Origins& origins, const ValidateOptions& options) {
  Validator(recipe, origins, options).run();
}

}  // namespace recipe_schema

void validate_recipe(const Recipe& recipe, const std::string& source,
                     const ValidateOptions& options) {
  const recipe_schema::Origins origins{source, {}};
  recipe_schema::check_recipe(recipe, origins, options);
}

}  // namespace infllm::train
