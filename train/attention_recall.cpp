#include "train/attention_recall.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "autograd/node.h"
#include "core/error.h"
#include "core/ops.h"

namespace infllm::train {

double dense_mass_in_blocks(int block_size, int T, int Hq, int Hkv, int D, const float* q,
                            const float* k, const std::vector<int>& rows, const int32_t* blocks,
                            int width) {
  if (rows.empty()) return 1.0;
  const double scale = 1.0 / std::sqrt(double(D));
  const int n = int(rows.size()), G = Hq / Hkv;
  for (int t : rows)
    INFLLM_CHECK(t >= 0 && t < T, "attention recall: row ", t, " is outside T=", T);
  double total = 0;
#pragma omp parallel for collapse(2) reduction(+ : total) schedule(dynamic, 1)
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < Hq; ++h) {
      const int t = rows[size_t(i)], g = h / G;
      const float* qr = q + (size_t(t) * Hq + h) * D;
      std::vector<double> s(size_t(t) + 1);
      double max = -INFINITY;
      for (int j = 0; j <= t; ++j) {
        const float* kr = k + (size_t(j) * Hkv + g) * D;
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += double(qr[d]) * double(kr[d]);
        s[size_t(j)] = dot * scale;
        max = std::max(max, s[size_t(j)]);
      }
      double all = 0;
      for (double& x : s) all += (x = std::exp(x - max));
      double inside = 0;
      const int32_t* list = blocks + (size_t(i) * Hkv + g) * width;
      for (int b = 0; b < width; ++b) {
        if (list[b] < 0) continue;
        for (int j = list[b] * block_size; j < std::min((list[b] + 1) * block_size, t + 1); ++j)
          inside += s[size_t(j)];
      }
      total += inside / all;
    }
  return total / (double(n) * Hq);
}

namespace {

attention::AttentionShape sequence_shape(int T, int Hq, int Hkv, int D) {
  attention::AttentionShape shape;
  shape.B = 1, shape.T = T, shape.Hq = Hq, shape.Hkv = Hkv, shape.D = D;
  shape.scale = float(1.0 / std::sqrt(double(D)));
  return shape;
}

}  // namespace

double attention_recall(const attention::SparseConfig& config, int T, int Hq, int Hkv, int D,
                        const float* q, const float* k, const std::vector<int>& rows) {
  if (rows.empty()) return 1.0;
  std::vector<int32_t> blocks(rows.size() * size_t(Hkv) * size_t(config.topk));
  attention::cpu::select_blocks_at<float>(config, sequence_shape(T, Hq, Hkv, D), q, k, rows,
                                          blocks.data());
  return dense_mass_in_blocks(config.block_size, T, Hq, Hkv, D, q, k, rows, blocks.data(),
                              config.topk);
}

NsaRecall nsa_attention_recall(const attention::SparseConfig& config,
                               const attention::NsaConfig& nsa, int T, int Hq, int Hkv, int D,
                               const float* q, const float* k, const float* kc,
                               const std::vector<int>& rows) {
  if (rows.empty()) return {1.0, 1.0};
  attention::check_nsa_config("attention recall", nsa, config);
  const int topk = config.topk, bs = config.block_size, L = nsa.window_size / bs;
  std::vector<int32_t> selected(rows.size() * size_t(Hkv) * size_t(topk));
  attention::cpu::select_blocks_compressed_at<float>(config, sequence_shape(T, Hq, Hkv, D), q, kc,
                                                     rows, selected.data());
  // Selected blocks and the window branch's blocks (own - L + 1 .. own), each block once.
  const int width = topk + L;
  std::vector<int32_t> both(rows.size() * size_t(Hkv) * size_t(width), -1);
  for (size_t i = 0; i < rows.size(); ++i)
    for (int g = 0; g < Hkv; ++g) {
      const int32_t* list = &selected[(i * Hkv + g) * topk];
      std::vector<int32_t> blocks(list, list + topk);
      const int own = rows[i] / bs;
      for (int j = std::max(0, own - L + 1); j <= own; ++j) blocks.push_back(j);
      std::sort(blocks.begin(), blocks.end());
      blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
      blocks.erase(blocks.begin(), std::upper_bound(blocks.begin(), blocks.end(), -1));
      std::copy(blocks.begin(), blocks.end(), &both[(i * Hkv + g) * width]);
    }
  return {dense_mass_in_blocks(bs, T, Hq, Hkv, D, q, k, rows, selected.data(), topk),
          dense_mass_in_blocks(bs, T, Hq, Hkv, D, q, k, rows, both.data(), width)};
}

std::vector<int> recall_rows(const attention::SparseConfig& config, int T, int64_t count) {
  // Token t has t / block_size + 1 causal blocks; the selection drops some once that > topk.
  int first = config.topk * config.block_size;
  if (first >= T) first = 0;
  std::vector<int> rows;
  const int64_t span = T - first;
  count = std::min<int64_t>(count, span);
  for (int64_t i = 0; i < count; ++i)
    rows.push_back(first + int(((2 * i + 1) * span) / (2 * count)));  // bucket midpoints
  return rows;
}

namespace {

// Batch row 0 of x [B, ...] as contiguous f32 on the host.
Tensor host_f32(const Tensor& x) {
  return ops::cast(x.slice(0, 0, 1).contiguous(), DType::f32).to(Device::cpu()).contiguous();
}

// Both probes of one forward pass: InfLLM-V2's (every call reporting to AttentionOptions::
// observer) and NSA's (NsaConfig::observer), one recall per call, i.e. per layer. Attention calls
// over another length than the sequence's are not a layer's token attention and are left out.
class RecallProbe : public AttentionObserver, public attention::NsaObserver {
 public:
  RecallProbe(const AttentionOptions& options, int64_t rows, int64_t T)
      : config_(options.sparse), nsa_(options.nsa), rows_(rows), T_(T) {
    nsa_.observer = nullptr;
  }

  void observe(const Tensor& q_in, const Tensor& k_in) override {
    if (q_in.size(1) != T_) return;
    take("infllm_v2");
    const Tensor q = host_f32(q_in), k = host_f32(k_in);
    const double r =
        attention_recall(config_, int(T_), int(q.size(2)), int(k.size(2)), int(q.size(3)),
                         q.data<float>(), k.data<float>(), recall_rows(config_, int(T_), rows_));
    result.by_layer.push_back(r);
    result.union_by_layer.push_back(r);  // its window is forced among the selected blocks
  }

  void observe(const Tensor& q_in, const Tensor& k_in, const Tensor& kc_in) override {
    if (q_in.size(1) != T_) return;
    take("nsa");
    const Tensor q = host_f32(q_in), k = host_f32(k_in), kc = host_f32(kc_in);
    const NsaRecall r = nsa_attention_recall(
        config_, nsa_, int(T_), int(q.size(2)), int(k.size(2)), int(q.size(3)), q.data<float>(),
        k.data<float>(), kc.data<float>(), recall_rows(config_, int(T_), rows_));
    result.by_layer.push_back(r.selected);
    result.union_by_layer.push_back(r.branch_union);
  }

  AttentionRecall result;

 private:
  void take(const char* selection) {
    INFLLM_CHECK(result.selection.empty() || result.selection == selection,
                 "attention recall: one forward pass ran both ", result.selection, " and ",
                 selection, " attention; evaluate with --attention dense or sparse");
    result.selection = selection;
  }

  attention::SparseConfig config_;
  attention::NsaConfig nsa_;
  int64_t rows_, T_;
};

}  // namespace

AttentionRecall measure_attention_recall(TransformerLM& model, const Tensor& tokens, int64_t rows) {
  autograd::NoGradGuard no_grad;
  INFLLM_CHECK(tokens.dim() == 2 && tokens.size(0) == 1,
               "attention recall: expected tokens [1, T], got ", tokens.str());
  const AttentionOptions attention = model.config().attention;
  auto probe = std::make_shared<RecallProbe>(attention, rows, tokens.size(1));
  AttentionOptions with_probe = attention;
  with_probe.observer = probe;
  with_probe.nsa.observer = probe;
  model.set_attention(with_probe);
  try {
    model.hidden_states(tokens);
  } catch (...) {
    model.set_attention(attention);
    throw;
  }
  model.set_attention(attention);
  AttentionRecall out = std::move(probe->result);
  if (out.selection.empty()) out.selection = "none";
  return out;
}

}  // namespace infllm::train
