#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "core/cuda/allocator.h"
#include "core/ops.h"
#include "train/batch_source.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/hf_model.h"
#include "train/load_model.h"
#include "train/preflight.h"
#include "train/replicas.h"
#include "train/run_folder.h"
#include "train/run_log.h"
#include "train/run_setup.h"
#include "train/signals.h"
#include "train/train_step.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double total_memory_gb(Device device) {
  return double(device_memory(device).total_bytes) / 1e9;
}

double peak_memory_gb(Device device) {
  if (device.is_cuda()) return double(cuda::memory_stats(device.index).peak) / 1e9;
  return 0;
}

class Run {
 public:
  // `folder`: rank 0's claim on the run folder (null on the other ranks).
  Run(const Recipe& recipe, const TrainOptions& options, RunFolder* folder)
      : recipe_(recipe),
        replicas_(recipe),
        device_(replicas_.device()),
        dtype_(compute_dtype(recipe, device_)),
        model_(recipe.model, recipe.train.seed, device_, dtype_),
        optimizer_(replicas_.make_optimizer(model_, recipe.optim)),
        batches_(recipe, device_, replicas_.rank(), replicas_.world_size()),
        checkpoint_dir_((fs::path(recipe.train.out_dir) / "checkpoints").string()) {
    if (replicas_.writer())
      std::fputs(("# resolved recipe\n" + recipe_to_yaml(recipe)).c_str(), stderr);
    if (!recipe.train.init_from.empty()) load_weights(recipe.train.init_from);
    if (options.resume) resume(options.resume_last_good);
    // Accepted: recipe, data, memory and any checkpoint to start from all checked out. Only
    // now does the run folder change (an earlier run moved aside, recipe.yaml, metrics).
    if (folder) {
      const std::string moved_to = folder->accept(recipe_to_yaml(recipe));
      if (!moved_to.empty())
        std::fprintf(stderr, "infllm: --overwrite: the earlier run's files are now in %s\n",
                     moved_to.c_str());
    }
    log_ = std::make_unique<RunLog>(recipe, start_step_, replicas_.writer());
  }

  int run() {
    if (replicas_.writer()) announce();
    install_stop_handlers();
    int64_t step = start_step_;
    auto start = Clock::now();
    while (step < recipe_.train.steps) {
      auto step_start = Clock::now();
      StepResult result = train_step(model_, *optimizer_, batches_, recipe_, step, replicas_);
      ++step;
      if (!result.applied && ++bad_steps_ > recipe_.train.max_bad_steps) {
        save(step);
        if (replicas_.writer())
          std::fprintf(stderr,
                       "infllm: stopping: %d non-finite steps (train.max_bad_steps = %d). "
                       "Lower optim.lr or raise optim.grad_clip; the last checkpoint is in %s\n",
                       bad_steps_, recipe_.train.max_bad_steps, checkpoint_dir_.c_str());
        return 1;
      }
      double step_seconds = seconds_since(step_start);
      log_step(step, result, step_seconds, seconds_since(start));
      maybe_evaluate(step);
      if (recipe_.checkpoint.every > 0 &&
          (step % recipe_.checkpoint.every == 0 || step == recipe_.train.steps)) {
        save(step);
      }
      if (result.stop) {
        save(step);
        log_->finish(summary(step, seconds_since(start)));
        if (replicas_.writer())
          std::fprintf(stderr,
                       "\ninfllm: %s received: checkpoint saved at step %lld; continue "
                       "with `infllm train <recipe> --resume train.out_dir=%s`\n",
                       stop_signal_name(), (long long)step, recipe_.train.out_dir.c_str());
        return 0;
      }
    }
    log_->finish(summary(step, seconds_since(start)));
    return 0;
  }

 private:
  void announce() {
    std::fprintf(stderr, "infllm: training %.1fM parameters on %s (%s), %lld steps of %lld tokens",
                 double(model_.num_parameters()) / 1e6, device_.str().c_str(), dtype_name(dtype_),
                 (long long)recipe_.train.steps, (long long)tokens_per_step());
    if (replicas_.distributed())
      std::fprintf(stderr,
                   "\ninfllm: data parallel over %d ranks (one GPU each), %s: %.2f GB of "
                   "optimizer state per GPU",
                   replicas_.world_size(), replicas_.optimizer_name(),
                   double(optimizer_->state_bytes()) / 1e9);
    std::fputc('\n', stderr);
  }

  RunSummary summary(int64_t step, double elapsed) const {
    RunSummary s;
    s.first_step = start_step_;
    s.last_step = step;
    s.final_loss = last_loss_;
    s.final_val_loss = last_val_loss_;
    s.elapsed_s = elapsed;
    s.tokens = double(step - start_step_) * double(tokens_per_step());
    s.peak_memory_gb = peak_memory_gb(device_);
    s.run_dir = recipe_.train.out_dir;
    return s;
  }

  int64_t tokens_per_step() const {
    return int64_t(recipe_.data.batch_size) * recipe_.data.seq_len * recipe_.data.grad_accum *
           replicas_.world_size();
  }

  void log_step(int64_t step, const StepResult& result, double step_seconds, double elapsed) {
    last_loss_ = result.loss;
    StepMetrics m;
    m.step_seconds = step_seconds;
    m.attention = attention::use_sparse(recipe_.model.attention.mode, recipe_.data.seq_len,
                                        recipe_.model.attention.sparse.dense_len)
                      ? "sparse"
                      : "dense";
    m.step = step;
    m.total_steps = recipe_.train.steps;
    m.loss = result.loss;
    m.lr = result.lr;
    m.grad_norm = result.grad_norm;
    m.tokens_per_s = double(tokens_per_step()) / step_seconds;
    double peak = peak_flops(device_);
    m.mfu = peak > 0 ? m.tokens_per_s / replicas_.world_size() *
                           model_.flops_per_token(recipe_.data.seq_len) / peak
                     : 0;
    m.world_size = replicas_.world_size();
    if (replicas_.distributed()) m.exposed_communication_ms = replicas_.exposed_communication_ms();
    m.memory_gb = peak_memory_gb(device_);
    m.memory_total_gb = total_memory_gb(device_);
    m.elapsed_s = elapsed;
    log_->step(m);
  }

  // On rank 0 only (the weights are the same everywhere); the others wait for it in the next
  // step's first collective.
  void maybe_evaluate(int64_t step) {
    if (!replicas_.writer() || recipe_.train.eval_every <= 0 || recipe_.data.val.empty()) return;
    if (step % recipe_.train.eval_every != 0 && step != recipe_.train.steps) return;
    EvalResult r = evaluate(model_, recipe_.data.val, recipe_.data.seq_len, recipe_.data.batch_size,
                            int64_t(recipe_.train.eval_batches) * recipe_.data.batch_size, device_);
    log_->validation(step, r.loss, r.perplexity);
    last_val_loss_ = r.loss;
  }

  CheckpointState state_at(int64_t step) {
    CheckpointState state;
    state.step = step;
    for (auto& [name, tensor] : optimizer_->state())
      state.tensors.emplace_back("optim/" + name, tensor);
    state.strings["recipe"] = recipe_to_yaml(recipe_);
    state.integers["data_step"] = batches_.step();
    state.integers["data_samples"] = batches_.global_samples();
    state.integers["optimizer_steps"] = optimizer_->steps_taken();
    state.integers["bad_steps"] = bad_steps_;
    state.integers["world_size"] = replicas_.world_size();
    return state;
  }

  // Every rank gathers the state (collective under ZeRO) and refuses a non-finite one, so all
  // ranks stop together; rank 0 writes it. Pruning verifies the new file before it deletes
  // anything, so the newest verified checkpoint is never lost.
  void save(int64_t step) {
    CheckpointState state = state_at(step);
    const std::string path = checkpoint_path(recipe_.train.out_dir, step);
    try {
      require_finite(state, path);
    } catch (const Error& error) {
      fail(error.what(), ". The run stops at step ", step,
           ": the training diverged (lower optim.lr, set optim.grad_clip); continue from the "
           "newest checkpoint in ",
           checkpoint_dir_, " with --resume");
    }
    if (!replicas_.writer()) return;
    save_checkpoint(path, state);
    const std::optional<std::string> newest_good =
        prune_checkpoints(checkpoint_dir_, recipe_.checkpoint.keep_last);
    if (newest_good == path) return;
    fail("checkpoint '", path, "' was written but does not read back as written: ",
         verify_checkpoint(path).value_or("(it verifies now)"),
         ". No older checkpoint was deleted; check the disk (dmesg, SMART) and continue with "
         "--resume-last-good");
  }

  // Weights only (finetune): optimizer state, step and data position start fresh. Strict
  // unless train.init_partial.
  // `spec` is a checkpoint path or hf:DIR (a Hugging Face Llama folder, whose shape the recipe
  // validation has already compared with the model section).
  void load_weights(const std::string& spec) {
    const bool hf = spec.starts_with("hf:");
    const std::string path = hf ? strip_hf_prefix(spec) : resolve_checkpoint_path(spec);
    CheckpointState state;
    if (hf) {
      state.source = path;
      for (auto& [name, tensor] : read_hf_model(path).weights)
        state.tensors.emplace_back(kMasterPrefix + name, tensor.to(device_));
    } else {
      state = load_checkpoint(path, device_, kMasterPrefix);
    }
    const WeightMatch match = load_master_weights(
        state, model_.named_parameters(), recipe_.train.init_partial, "train.init_from",
        "Make this recipe's model section match the one that wrote the checkpoint (its 'recipe' "
        "attribute: h5dump -a recipe " +
            path + "), or set train.init_partial=true to load only the weights that match.",
        [&](const std::string& name, const Tensor& weights) {
          optimizer_->set_master(name, weights);
        });
    if (!replicas_.writer()) return;
    std::fprintf(stderr, "infllm: initialized weights from %s\n", path.c_str());
    if (!match.exact())
      std::fprintf(stderr,
                   "infllm: train.init_partial: loaded %zu weights; missing and mismatched "
                   "ones keep their initialization, unexpected ones are not used: %s\n",
                   match.matched.size(), match.differences(kMasterPrefix).c_str());
  }

  // The newest checkpoint, or - when it is damaged and `last_good` - the newest that verifies;
  // `damaged` gets the damaged files newer than it.
  CheckpointState load_resume_state(const std::string& newest, bool last_good,
                                    std::vector<std::string>& damaged) {
    try {
      return load_checkpoint(newest, device_);
    } catch (const CheckpointDamaged&) {
    }
    const CheckpointScan scan = scan_checkpoints(checkpoint_dir_);
    std::string problems;
    for (const auto& [path, problem] : scan.damaged) problems += "\n  " + problem;
    if (!scan.newest_good)
      fail("--resume: no checkpoint in ", checkpoint_dir_, " verifies:", problems,
           "\nThe files are left as they are. Start the run over (--overwrite), or put a good "
           "checkpoint into the folder.");
    INFLLM_CHECK(last_good, "--resume: the newest checkpoint is damaged:", problems,
                 "\nThe newest checkpoint that verifies is ", *scan.newest_good,
                 "; continue from it by running the same command with --resume-last-good "
                 "(the damaged files are kept, renamed to *.damaged). Nothing in the run folder "
                 "was changed.");
    for (const auto& [path, problem] : scan.damaged) {
      damaged.push_back(path);
      if (replicas_.writer())
        std::fprintf(stderr, "infllm: --resume-last-good: skipping %s\n", problem.c_str());
    }
    return load_checkpoint(*scan.newest_good, device_);
  }

  // Every tensor of the state must be one of the optimizer's, with its parameter's shape.
  void require_optimizer_state_fits(const CheckpointState& state) {
    const std::vector<NamedParameter> params = model_.named_parameters();
    const char* const prefixes[] = {"optim/master/", "optim/exp_avg/", "optim/exp_avg_sq/"};
    std::string differences;
    for (const char* prefix : prefixes) {
      const WeightMatch match = match_weights(state, prefix, params);
      if (!match.exact()) differences += "\n" + match.differences(prefix);
    }
    for (const auto& [name, tensor] : state.tensors) {
      if (std::none_of(std::begin(prefixes), std::end(prefixes),
                       [&](const char* prefix) { return name.starts_with(prefix); }))
        differences += "\nunexpected tensor " + name;
    }
    INFLLM_CHECK(differences.empty(), "--resume: checkpoint '", state.source,
                 "' does not fit this recipe's model and optimizer:", differences,
                 "\nResume with the model section of the run that wrote it (its 'recipe' "
                 "attribute), or start a new run from its weights with train.init_from=",
                 state.source, " train.init_partial=true.");
  }

  void resume(bool last_good) {
    std::optional<std::string> latest = latest_checkpoint(checkpoint_dir_);
    if (!latest) {
      std::fprintf(stderr, "infllm: --resume: no checkpoint in %s yet; starting fresh\n",
                   checkpoint_dir_.c_str());
      return;
    }
    std::vector<std::string> damaged;
    CheckpointState state = load_resume_state(*latest, last_good, damaged);
    require_optimizer_state_fits(state);
    std::map<std::string, Tensor> optim;
    for (auto& [name, tensor] : state.tensors) optim[name.substr(6)] = tensor;  // "master/.."
    optimizer_->load_state(optim);
    optimizer_->set_steps_taken(state.require_integer("optimizer_steps"));
    const int64_t saved_world = state.require_integer("world_size");
    // Older checkpoints lack data_samples: their ranks each took data_step batches of this size.
    auto samples = state.integers.find("data_samples");
    const int64_t data_samples =
        samples != state.integers.end()
            ? samples->second
            : state.require_integer("data_step") * saved_world * recipe_.data.batch_size;
    const bool exact = batches_.seek_global_samples(data_samples);
    bad_steps_ = int(state.require_integer("bad_steps"));
    start_step_ = state.step;
    if (!damaged.empty()) {
      // Out of the way of listing, pruning and the new checkpoints of the same steps, kept for
      // inspection. Only once every rank has loaded (the barrier), by rank 0 alone.
      replicas_.mean({0.0});
      for (const std::string& path : damaged) {
        if (!replicas_.writer()) continue;
        std::fprintf(stderr, "infllm: --resume-last-good: renamed the damaged %s to %s\n",
                     path.c_str(), set_aside_damaged(path).c_str());
      }
    }
    if (!replicas_.writer()) return;
    std::fprintf(stderr, "infllm: resumed from %s at step %lld\n", state.source.c_str(),
                 (long long)start_step_);
    if (saved_world != replicas_.world_size())
      std::fprintf(stderr,
                   "infllm: the checkpoint was written by %lld ranks and this run has %d: "
                   "the data continues at window %lld of the run, dealt to %d ranks\n",
                   (long long)saved_world, replicas_.world_size(), (long long)data_samples,
                   replicas_.world_size());
    if (!exact)
      std::fprintf(stderr,
                   "infllm: warning: %lld windows consumed is not a whole number of "
                   "global batches (%d ranks x data.batch_size %d): continuing from the last "
                   "whole batch, a few windows are seen twice\n",
                   (long long)data_samples, replicas_.world_size(), recipe_.data.batch_size);
  }

  const Recipe& recipe_;
  Replicas replicas_;
  Device device_;
  DType dtype_;
  TransformerLM model_;
  std::unique_ptr<Optimizer> optimizer_;
  BatchSource batches_;
  std::string checkpoint_dir_;
  std::unique_ptr<RunLog> log_;
  int64_t start_step_ = 0;
  int bad_steps_ = 0;
  double last_loss_ = NAN, last_val_loss_ = NAN;
};

}  // namespace

int train(const Recipe& recipe, const TrainOptions& options) {
  INFLLM_CHECK(!(options.resume && options.overwrite),
               "--resume and --overwrite contradict each other: --resume continues the run in "
               "train.out_dir, --overwrite starts over; pass one");
  const distributed::LaunchEnv env =
      distributed::detect_launch_env(distributed::process_env_reader());
  // Rank 0 alone writes the folder, so it alone claims it; the others never wait on the lock.
  std::optional<RunFolder> folder;
  if (env.rank == 0)
    folder.emplace(recipe.train.out_dir, options.resume      ? RunStart::resume
                                         : options.overwrite ? RunStart::overwrite
                                                             : RunStart::fresh);
  check_before_training(recipe, env, training_device(recipe, env));
  Run run(recipe, options, folder ? &*folder : nullptr);
  return run.run();
}

}  // namespace infllm::train
