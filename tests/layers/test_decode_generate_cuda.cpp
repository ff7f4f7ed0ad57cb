// Generation with a KV cache against the no-cache recompute on the GPU, in bf16 (skipped
// without one): greedy tokens and logits, dense and InfLLM-V2 sparse, teacher-forced on the
// recompute's tokens, then free running.
//
// The two paths round differently (a GEMM of one row against one of the whole context, the
// decode attention kernel against the training one), so a step may pick another token where the
// recompute's top two logits are a rounding apart, and on the sparse path a layer may choose
// another block where two blocks' scores are a rounding apart (block_choice_check.h); with one
// free block per row that moves the logits far. The sparse case tells such ties from bugs by
// itself: every decode step's lists must be the f64 choice on their own inputs (decode and
// training alike, up to f32 rounding), and a step whose logits differ beyond tolerance (or whose
// token differs beyond a logit near tie) must have a layer whose two lists differ, the lowest
// such layer only between blocks within bf16 rounding of each other on the recompute's inputs.
// Each such step prints one diagnosis line. A failure names the seeds that rerun the case.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "tests/layers/block_choice_check.h"
#include "tests/layers/decode_generate_support.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::argmax;
using testing::Greedy;
using testing::TokenSelection;

// The model and prompt seeds of a case: INFLLM_DECODE_SEEDS="MODEL,PROMPT" (decimal or 0x hex,
// as a failure prints them) reruns one case; otherwise two fresh_seed() draws.
struct CaseSeeds {
  uint64_t model = 0, prompt = 0;
  std::string str() const {
    std::ostringstream out;
    out << std::hex << "0x" << model << ",0x" << prompt;
    return out.str();
  }
};

CaseSeeds case_seeds() {
  if (const char* env = std::getenv("INFLLM_DECODE_SEEDS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    CaseSeeds s;
    s.model = std::strtoull(env, &end, 0);
    if (end != nullptr && *end == ',') s.prompt = std::strtoull(end + 1, &end, 0);
    if (end != nullptr && *end == '\0') return s;
    ADD_FAILURE() << "INFLLM_DECODE_SEEDS=\"" << env
                  << "\" is not two comma-separated integers MODEL,PROMPT; using fresh seeds";
  }
  CaseSeeds s;
  s.model = testing::fresh_seed();
  s.prompt = testing::fresh_seed();
  return s;
}

// How to rerun the current case alone with these seeds.
std::string rerun_note(const CaseSeeds& seeds) {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  return "seeds " + seeds.str() + "; rerun this case alone: INFLLM_DECODE_SEEDS=" + seeds.str() +
         " tests/layers/test_decode_generate_cuda --gtest_filter=" + test->test_suite_name() + "." +
         test->name() + " (in the build folder)";
}

// A teacher-forced step whose logits differ beyond tolerance, weighed by its block choices: the
// lowest layer whose decode and training lists differ (the layers above read inputs that choice
// changed), and whether it differs only between blocks within bf16 rounding of each other.
struct StepDiagnosis {
  bool explained = false;
  std::string line;
};

StepDiagnosis diagnose_step(const attention::SparseConfig& cfg, int Hq, int Hkv, int D, int step,
                            double error, const std::vector<TokenSelection>& decoded,
                            const std::vector<TokenSelection>& trained) {
  StepDiagnosis d;
  std::ostringstream line;
  line << "step " << step << " (position " << trained[0].position << "), logits rel error " << error
       << ": ";
  for (size_t layer = 0; layer < decoded.size(); ++layer) {
    const TokenSelection &dec = decoded[layer], &rec = trained[layer];
    if (dec.blocks == rec.blocks) continue;
    const attention::AttentionShape shape = testing::token_shape(Hq, Hkv, D, rec.position);
    const int nb = attention::num_blocks(cfg, rec.position + 1);
    const std::vector<double> S = testing::f64_block_scores(cfg, shape, rec);
    const std::vector<double> S_dec = testing::f64_block_scores(cfg, shape, dec);
    d.explained = true;
    line << "layer " << layer;
    for (int g = 0; g < Hkv; ++g) {
      if (testing::rows_equal(dec.blocks, rec.blocks, g, cfg.topk)) continue;
      const double gap = testing::swap_gap(S, nb, dec.blocks, rec.blocks, g, cfg.topk);
      const double bound = testing::bf16_tie_bound(cfg, shape, rec, g);
      line << " group " << g << ": decode "
           << testing::list_str(testing::row_blocks(dec.blocks, g, cfg.topk)) << ", training "
           << testing::list_str(testing::row_blocks(rec.blocks, g, cfg.topk))
           << "; f64 scores on the training's inputs:";
      for (const std::vector<int32_t>& side :
           {testing::only_in(dec.blocks, rec.blocks, g, cfg.topk),
            testing::only_in(rec.blocks, dec.blocks, g, cfg.topk)})
        for (int32_t b : side) line << " S[" << b << "]=" << S[size_t(g) * nb + b];
      line << ", ln gap " << gap << (gap <= bound ? " <= " : " > ") << "bf16 bound " << bound
           << " (scores moved " << testing::score_drift(S, S_dec, nb, g)
           << " between the paths' inputs);";
      d.explained = d.explained && gap <= bound;
    }
    line << (d.explained ? " a bf16 near tie"
                         : " NOT a near tie: a bug in the decode or the training selection");
    d.line = line.str();
    return d;
  }
  line << "every layer chose the same blocks, yet the logits differ: a bug outside the selection "
          "(decode attention, the cache)";
  d.line = line.str();
  return d;
}

void expect_gpu_greedy_equal(attention::AttentionMode mode) {
  INFLLM_REQUIRE_GPU();
  autograd::NoGradGuard no_grad;
  const CaseSeeds seeds = case_seeds();
  SCOPED_TRACE(rerun_note(seeds));
  const ModelConfig config = testing::gpu_model(mode);
  TransformerLM model(config, seeds.model, Device::cuda(), DType::bf16);
  const std::vector<int32_t> prompt =
      testing::random_prompt(600, int(config.vocab_size), seeds.prompt);
  const int steps = 100, layers = int(config.n_layers);
  const bool sparse = mode == attention::AttentionMode::sparse;
  const attention::SparseConfig& cfg = model.config().attention.sparse;
  const int Hq = int(model.config().n_heads), Hkv = int(model.config().n_kv_heads);
  const int D = int(model.config().head_dim);

  // The recompute, its training selections observed: probe->rows[step * layers + layer].
  const AttentionOptions plain = model.config().attention;
  auto probe = std::make_shared<testing::LastRowProbe>(cfg);
  if (sparse) {
    AttentionOptions observed = plain;
    observed.observer = probe;
    model.set_attention(observed);
  }
  const Greedy ref = testing::greedy_recompute(model, prompt, steps, Device::cuda());
  model.set_attention(plain);
  // Teacher-forced on the recompute's tokens, each step's decode selections kept.
  std::vector<std::vector<TokenSelection>> decoded(steps);
  const Greedy forced = testing::greedy_cached(
      model, prompt, steps, Device::cuda(), ref.tokens, [&](int step, const KvCache& cache) {
        if (sparse)
          for (int l = 0; l < layers; ++l)
            decoded[size_t(step)].push_back(testing::decoded_selection(cache, l));
      });
  if (sparse) {
    ASSERT_EQ(probe->rows.size(), size_t(steps) * layers);
  }

  int near_ties = 0, block_ties = 0;
  std::string steps_with_other_blocks;  // earlier steps where some layer's two lists differed
  for (int i = 0; i < steps; ++i) {
    const std::vector<double>& r = ref.logits[size_t(i)];
    const double error = testing::rel_error(forced.logits[size_t(i)], r);
    const int32_t mine = argmax(forced.logits[size_t(i)]), theirs = ref.tokens[size_t(i)];
    // How far the recompute prefers its token to the one the cache's logits pick: a logit near
    // tie when within bf16 rounding of the logits.
    const double margin = r[size_t(theirs)] - r[size_t(mine)];
    const double margin_bound = 2e-2 * std::max(1.0, std::abs(r[size_t(mine)]));
    near_ties += mine != theirs;
    bool tie_explains = false;  // a bf16 near tie of a block choice explains this step
    if (sparse && i > 0) {
      const std::vector<TokenSelection> trained(probe->rows.begin() + i * layers,
                                                probe->rows.begin() + (i + 1) * layers);
      bool other_blocks = false;
      for (int l = 0; l < layers; ++l) {
        const TokenSelection& dec = decoded[size_t(i)][size_t(l)];
        const attention::AttentionShape shape =
            testing::token_shape(Hq, Hkv, D, trained[size_t(l)].position);
        ASSERT_EQ(dec.position, trained[size_t(l)].position);
        testing::expect_exact_on_own_inputs(cfg, shape, dec,
                                            "decode selection, layer " + std::to_string(l));
        testing::expect_exact_on_own_inputs(cfg, shape, trained[size_t(l)],
                                            "training selection, layer " + std::to_string(l));
        other_blocks = other_blocks || dec.blocks != trained[size_t(l)].blocks;
      }
      if (error >= 3e-2 || margin >= margin_bound) {
        StepDiagnosis d = diagnose_step(cfg, Hq, Hkv, D, i, error, decoded[size_t(i)], trained);
        if (!d.explained && !steps_with_other_blocks.empty())
          d.line += "; earlier steps whose lists differed:" + steps_with_other_blocks;
        std::printf("gpu greedy sparse: %s\n", d.line.c_str());
        EXPECT_TRUE(d.explained) << d.line;
        tie_explains = d.explained;
        block_ties += d.explained;
      }
      if (other_blocks) steps_with_other_blocks += " " + std::to_string(i);
    }
    if (tie_explains) continue;  // the logits moved with the block choice
    EXPECT_LT(error, 3e-2) << "step " << i;
    // The cache may pick another token only where the recompute's top two logits are a bf16
    // rounding apart.
    EXPECT_LT(margin, margin_bound) << "step " << i;
  }
  EXPECT_LE(near_ties, steps / 10);
  // Free running: identical up to the first near tie (usually all the way).
  const Greedy free = testing::greedy_cached(model, prompt, steps, Device::cuda());
  const int same =
      int(std::mismatch(free.tokens.begin(), free.tokens.end(), ref.tokens.begin()).first -
          free.tokens.begin());
  std::printf(
      "gpu greedy %s (seeds %s): %d of %d tokens equal before the first difference, %d "
      "near ties, %d steps moved by a block-choice tie\n",
      std::string(to_string(mode)).c_str(), seeds.str().c_str(), same, steps, near_ties,
      block_ties);
  if (near_ties == 0) {
    EXPECT_EQ(free.tokens, ref.tokens);
  }
}

TEST(DecodeGenerateCuda, DenseGreedyWithTheCacheEqualsTheRecompute) {
  expect_gpu_greedy_equal(attention::AttentionMode::dense);
}

TEST(DecodeGenerateCuda, SparseGreedyWithTheCacheEqualsTheRecompute) {
  expect_gpu_greedy_equal(attention::AttentionMode::sparse);
}

}  // namespace
}  // namespace infllm
