#include "train/memory_estimate.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace infllm::train {
namespace {

std::string gigabytes(double bytes) {
  char text[64];
  if (bytes >= 1e12)
    std::snprintf(text, sizeof text, "%.3g TB", bytes / 1e12);
  else if (bytes >= 1e9)
    std::snprintf(text, sizeof text, "%.3g GB", bytes / 1e9);
  else
    std::snprintf(text, sizeof text, "%.3g MB", bytes / 1e6);
  return text;
}

// A number read from the first line of a file ("max" and unreadable files give -1).
double read_number(const std::string& path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word == "max") return -1;
  try {
    return std::stod(word);
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

double MemoryEstimate::bytes(bool on_device) const {
  double total = 0;
  for (const MemoryPart& part : parts) total += part.on_device == on_device ? part.bytes : 0;
  return total;
}

double parameter_count(const ModelConfig& m) {
  const double d = m.d_model, V = m.vocab_size, hd = m.head_dim;
  const double attention = d * (m.n_heads + 2.0 * m.n_kv_heads) * hd + m.n_heads * hd * d;
  const double mlp = d * 2.0 * m.ffn_hidden + double(m.ffn_hidden) * d;
  const double per_layer = attention + mlp + 2 * d;  // + attention_norm, mlp_norm
  return V * d + m.n_layers * per_layer + d + (m.tie_embeddings ? 0 : V * d);
}

MemoryEstimate estimate_memory(const Recipe& recipe, bool on_gpu, int world_size,
                               int ranks_per_host) {
  const ModelConfig& m = recipe.model;
  const DataConfig& data = recipe.data;
  const double P = parameter_count(m);
  const double compute_bytes = on_gpu ? 2 : 4;  // bf16 on a GPU, f32 on the CPU
  const double shards = recipe.distributed.zero == 1 ? std::max(world_size, 1) : 1;
  const std::string model_keys =
      "model.n_layers, model.d_model, model.ffn_hidden, model.vocab_size, model.n_heads";
  MemoryEstimate estimate;
  auto add = [&](std::string what, double bytes, std::string keys, bool on_device) {
    estimate.parts.push_back({std::move(what), bytes, std::move(keys), on_device && on_gpu});
  };
  char count[64];
  std::snprintf(count, sizeof count, "%.4g", P);
  add(std::string("weights (") + count + " parameters)", P * compute_bytes, model_keys, true);
  if (on_gpu) add("f32 master weights", P * 4 / shards, model_keys + ", distributed.zero", true);
  add("AdamW moments (f32 m and v)", P * 8 / shards, model_keys + ", distributed.zero", true);
  add("f32 gradients", P * 4, model_keys, true);

  // Activations of one micro-batch that backward must keep, counted low: per token and layer
  // the block's input, q, k, v and the attention output, and the SwiGLU gate/up pair; with
  // checkpointing only each block's input plus one block's worth during the recompute. Norm
  // outputs, attention internals and temporaries come on top; the logits never exist whole
  // (the LM head and the loss run a chunk of rows at a time). For bench200m at 64K tokens this
  // is 14 GB where the run peaks at 24 GB of activations.
  const double tokens = double(data.batch_size) * data.seq_len;
  // The NSA variant keeps each of its three branches' outputs and the gate logits on top.
  const bool nsa = m.attention.variant == attention::AttentionVariant::nsa;
  const double per_layer_token =
      double(m.d_model) + (2.0 * m.n_heads + 2.0 * m.n_kv_heads) * m.head_dim + 2.0 * m.ffn_hidden +
      (nsa ? 3.0 * m.n_heads * (m.head_dim + 1) : 0);
  const bool checkpointing = m.activation_checkpointing;
  const double kept_layers_token = checkpointing ? double(m.n_layers) * m.d_model + per_layer_token
                                                 : double(m.n_layers) * per_layer_token;
  add(checkpointing ? "activations (with activation checkpointing)"
                    : "activations (no activation checkpointing)",
      tokens * kept_layers_token * compute_bytes,
      std::string("data.batch_size, data.seq_len, model.n_layers, train.activation_checkpointing") +
          (nsa ? ", attention.variant" : ""),
      true);

  // The loader's ring of batch buffers (inputs and targets as int32), one ring per rank.
  if (data.train != kRandomData) {
    const double ring = (double(data.prefetch) + 1) * 2 * tokens * 4 * std::max(ranks_per_host, 1);
    add("data loader buffers", ring, "data.prefetch, data.batch_size, data.seq_len", false);
  }
  return estimate;
}

double available_host_bytes() {
  double available = -1;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    double kib = 0;
    if (fields >> kib) available = kib * 1024;
  }
  if (available < 0) {
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) available = double(pages) * double(page);
  }
  const double limit = read_number("/sys/fs/cgroup/memory.max");
  const double used = read_number("/sys/fs/cgroup/memory.current");
  if (limit > 0 && used >= 0) available = std::min(available < 0 ? limit : available, limit - used);
  return std::max(available, 0.0);
}

void check_memory(const MemoryEstimate& estimate, double host_available, double device_available,
                  const std::string& device_name) {
  for (bool on_device : {false, true}) {
    const double needed = estimate.bytes(on_device);
    const double available = on_device ? device_available : host_available;
    if (available <= 0 || needed <= available) continue;
    std::vector<MemoryPart> parts;
    for (const MemoryPart& part : estimate.parts)
      if (part.on_device == on_device) parts.push_back(part);
    std::sort(parts.begin(), parts.end(),
              [](const MemoryPart& a, const MemoryPart& b) { return a.bytes > b.bytes; });
    std::string lines;
    for (const MemoryPart& part : parts)
      lines += "\n  " + gigabytes(part.bytes) + "  " + part.what + "  (" + part.keys + ")";
    fail("memory: this recipe needs at least ", gigabytes(needed), " of ",
         on_device ? device_name + " memory" : std::string("host memory"), " but ",
         gigabytes(available), " is available:", lines,
         "\nlower the keys of the largest parts (a smaller model, data.batch_size, data.seq_len, "
         "data.prefetch), or set train.activation_checkpointing=true");
  }
}

}  // namespace infllm::train
