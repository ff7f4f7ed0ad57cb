// CUDA decode selection (decode_attention.h): InfLLM-V2's steps 2-4 for the one new token t = p,
// computed as the training selection computes row t (infllm_v2_scores.cu: f32 dots of bf16
// values, base-2 softmax with ex2.approx, exact normalizer), and the compressed keys appended as
// kernels complete.
//   ckey_logits_kernel  grid (ceil(n / 64), Hkv): the dots q_h . kc_i of the group's G heads with
//                       64 causal compressed keys per CTA into `logits` [Hkv, G, n], and each
//                       CTA's partial softmax (max m, sum l) per head
//   select_kernel       grid Hkv, 1024 threads: each head's log-sum-exp from the partials; each
//                       compressed key's probabilities summed over the group's heads; block
//                       scores S_j = the largest of those sums over compressed keys [r*j - 1,
//                       r*j + r - 1] (+inf for forced blocks); the top k = min(topk, j_t
//                       + 1) by a radix select of the k-th largest key, ties taken lowest block
//                       first; written ascending, -1 padded
//   append_kernel       one CTA per completed compressed key: the f32 mean of its keys
#include <cuda_runtime.h>

#include <algorithm>

#include "attention/decode_attention.h"
#include "attention/decode_tiles.cuh"
#include "attention/flash_attention_mma.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

using namespace decode;

constexpr int kSelectThreads = 1024;
constexpr int kMaxSelectBlocks = 8192;  // blocks 0 .. j_t held in shared memory

struct LogitsArgs {
  const bf16* q;    // [Hq, D]
  const bf16* kc;   // [n, Hkv, D]
  float* logits;    // [Hkv, G, n]
  float2* partial;  // [Hkv, G, ctas]
  int Hkv, G, n;
  float scale_log2;
};

template <int D>
__global__ void __launch_bounds__(kThreads) ckey_logits_kernel(const LogitsArgs a) {
  __shared__ __align__(16) bf16 tile[kTileRows * kKeyPitch<D>];
  __shared__ __align__(16) float q_sh[kMaxGroup * D];
  __shared__ float x[kMaxGroup][kTileRows];
  const int g = blockIdx.y, G = a.G, t = threadIdx.x, warp = t / 32, lane = t % 32;
  const int i0 = blockIdx.x * kTileRows, count = min(kTileRows, a.n - i0);
  const int64_t row = int64_t(a.Hkv) * D;
  load_queries<D>(a.q + size_t(g) * G * D, G, q_sh);
  load_tile<D>(a.kc + i0 * row + g * D, row, count, kKeyPitch<D>, tile);
  __syncthreads();
  const int i = t % kTileRows, h0 = t / kTileRows, step = kThreads / kTileRows;
  float dot[kMaxGroup];
  row_dots<D>(q_sh, tile + i * kKeyPitch<D>, G, h0, step, dot);
#pragma unroll
  for (int m = 0; m < kMaxGroup; ++m) {
    const int h = h0 + m * step;
    if (h >= G) break;
    if (i < count) a.logits[(size_t(g) * G + h) * a.n + i0 + i] = dot[m];
    x[h][i] = i < count ? dot[m] * a.scale_log2 : -INFINITY;
  }
  __syncthreads();
  for (int h = warp; h < G; h += kThreads / 32) {
    const float s0 = x[h][lane], s1 = x[h][lane + 32];
    const float m = warp_max(fmaxf(s0, s1));  // finite: count >= 1
    const float l = warp_sum(mma::fast_exp2(s0 - m) + mma::fast_exp2(s1 - m));
    if (lane == 0) a.partial[(size_t(g) * G + h) * gridDim.x + blockIdx.x] = make_float2(m, l);
  }
}

struct SelectArgs {
  float* logits;          // [Hkv, G, n]; select_kernel turns row 0 of each group into p
  const float2* partial;  // [Hkv, G, ctas]
  int32_t* blocks;        // [Hkv, topk]
  SparseConfig cfg;
  int G, n, ctas, position;
  float scale_log2;
};

// Order-preserving map of f32 scores to unsigned keys, as infllm_v2_topk.cu: ~0u for forced.
__device__ __forceinline__ uint32_t score_key(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Base-2 log-sum-exp of (m, l) pairs merged; m = -inf means "empty" (l = 0).
__device__ __forceinline__ void merge_lse(float& m, float& l, float m2, float l2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;
  l = (m == -INFINITY ? 0.f : l * mma::fast_exp2(m - mx)) +
      (m2 == -INFINITY ? 0.f : l2 * mma::fast_exp2(m2 - mx));
  m = mx;
}

// The sum of x over the CTA (every thread gets it); `scratch` holds 32 ints.
__device__ int block_sum(int x, int* scratch) {
  x = __reduce_add_sync(~0u, x);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  int total = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += scratch[w];
  __syncthreads();
  return total;
}

// The sum of x over the threads before this one.
__device__ int block_exclusive_sum(int x, int* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inclusive = x;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const int other = __shfl_up_sync(~0u, inclusive, off);
    if (lane >= off) inclusive += other;
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  int before = 0;
  for (int w = 0; w < warp; ++w) before += scratch[w];
  __syncthreads();
  return before + inclusive - x;
}

// The k-th largest of the CTA's keys (thread t holds keys[j0, j1)), a radix select on 8-bit
// digits from the top: each pass counts, among the keys that share the digits found so far,
// how many have each next digit, and keeps the largest digit whose count from the top reaches
// the rank still wanted: four passes of three barriers each (bit by bit: 32 passes of two).
// `digits` is shared memory for 256 counts plus the chosen digit and remaining rank.
__device__ uint32_t kth_largest_key(const uint32_t* keys, int j0, int j1, int k, int* digits) {
  uint32_t prefix = 0, known = 0;         // the digits found so far, and their bits
  if (threadIdx.x == 0) digits[257] = k;  // ordered before its first read by the loop's barriers
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) digits[d] = 0;
    __syncthreads();
    for (int j = j0; j < j1; ++j)
      if ((keys[j] & known) == prefix) atomicAdd(&digits[(keys[j] >> shift) & 255], 1);
    __syncthreads();
    if (threadIdx.x < 32) {  // lane l holds digits 255 - 8l down to 248 - 8l
      const int lane = threadIdx.x;
      int count[8], own = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) own += count[e] = digits[255 - 8 * lane - e];
      int above = own;  // keys with a digit of this lane or a higher one: inclusive scan
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const int other = __shfl_up_sync(~0u, above, off);
        if (lane >= off) above += other;
      }
      above -= own;                                   // now: keys with a digit above this lane's
      const int wanted = digits[257];                 // rank still wanted among the prefix's keys
      if (above < wanted && above + own >= wanted) {  // exactly one lane
        int e = 0;
        while (above + count[e] < wanted) above += count[e++];
        digits[256] = 255 - 8 * lane - e;
        digits[258] = wanted - above;
      }
    }
    __syncthreads();
    prefix |= uint32_t(digits[256]) << shift;
    known |= 255u << shift;
    if (threadIdx.x == 0) digits[257] = digits[258];
  }
  return prefix;
}

__global__ void __launch_bounds__(kSelectThreads) select_kernel(const SelectArgs a) {
  __shared__ uint32_t keys[kMaxSelectBlocks];
  __shared__ int digits[259];
  __shared__ float lse[kMaxGroup];
  __shared__ int scratch[32];
  const int g = blockIdx.x, G = a.G, t = threadIdx.x, warp = t / 32, lane = t % 32;
  const SparseConfig& cfg = a.cfg;
  for (int h = warp; h < G; h += kSelectThreads / 32) {
    float m = -INFINITY, l = 0.f;
    for (int i = lane; i < a.ctas; i += 32) {
      const float2 part = a.partial[(size_t(g) * G + h) * a.ctas + i];
      merge_lse(m, l, part.x, part.y);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2)
      merge_lse(m, l, __shfl_xor_sync(~0u, m, off), __shfl_xor_sync(~0u, l, off));
    if (lane == 0) lse[h] = l > 0.f ? m + log2f(l) : INFINITY;  // no compressed keys: p = 0
  }
  __syncthreads();

  // p_i = the group's probabilities of compressed key i summed over its heads (in head order,
  // as the training selection sums them), one key per thread so that the loads coalesce and
  // the CTA's cost grows by n / 1024 per thread. Written over logits row 0: column i is read
  // and written by its own thread only.
  float* logits = a.logits + size_t(g) * G * a.n;
  for (int i = t; i < a.n; i += kSelectThreads) {
    float s = 0.f;
    for (int h = 0; h < G; ++h)
      s += mma::fast_exp2(fmaf(logits[size_t(h) * a.n + i], a.scale_log2, -lse[h]));
    logits[i] = s;
  }
  __syncthreads();  // also orders the global writes above before the reads below
  const float* probs = logits;

  // Thread t owns blocks [j0, j1): contiguous, so thread order is block order.
  const int nb = a.position / cfg.block_size + 1, r = cfg.kernels_per_block();
  const int per = (nb + kSelectThreads - 1) / kSelectThreads;
  const int j0 = min(t * per, nb), j1 = min(j0 + per, nb);
  for (int j = j0; j < j1; ++j) {
    if (is_forced_block(cfg, a.position, j)) {
      keys[j] = ~0u;
      continue;
    }
    float best = -INFINITY;
    for (int i = max(r * j - 1, 0); i <= min(r * j + r - 1, a.n - 1); ++i)
      best = fmaxf(best, probs[i]);
    keys[j] = score_key(best);
  }
  __syncthreads();

  const int k = min(cfg.topk, nb);
  const uint32_t th = kth_largest_key(keys, j0, j1, k, digits);
  // Every key above th, then the lowest-index ties until k are taken. A thread's ties rank after
  // those of the threads before it (block order).
  int above = 0, ties = 0;
  for (int j = j0; j < j1; ++j) {
    above += keys[j] > th;
    ties += keys[j] == th;
  }
  const int ties_taken = k - block_sum(above, scratch);
  const int tie_start = block_exclusive_sum(ties, scratch);
  int rank = tie_start, taken = 0;
  for (int j = j0; j < j1; ++j) taken += keys[j] > th || (keys[j] == th && rank++ < ties_taken);
  int out = block_exclusive_sum(taken, scratch);
  rank = tie_start;
  int32_t* list = a.blocks + size_t(g) * cfg.topk;
  for (int j = j0; j < j1; ++j)
    if (keys[j] > th || (keys[j] == th && rank++ < ties_taken)) list[out++] = j;
  for (int i = k + t; i < cfg.topk; i += kSelectThreads) list[i] = -1;
}

__global__ void append_kernel(const bf16* k, bf16* kc, int row, int first, int span, int stride) {
  // The order and rounding of compress_keys_kernel (infllm_v2_scores.cu): bit-identical rows.
  const int i = first + blockIdx.x;
  const bf16* src = k + size_t(i) * stride * row;
  for (int c = threadIdx.x; c < row; c += blockDim.x) {
    float sum = 0.f;
    for (int u = 0; u < span; ++u) sum += __bfloat162float(src[size_t(u) * row + c]);
    kc[size_t(i) * row + c] = __float2bfloat16(sum / float(span));
  }
}

struct Layout {
  int n, ctas;
  size_t partial_bytes, bytes;
};

Layout layout(const SparseConfig& cfg, const DecodeShape& s) {
  Layout l;
  l.n = num_kernels(cfg, s.position + 1);
  l.ctas = (l.n + kTileRows - 1) / kTileRows;
  l.partial_bytes = (size_t(s.Hq) * l.ctas * sizeof(float2) + 255) / 256 * 256;
  l.bytes = l.partial_bytes + size_t(s.Hq) * l.n * sizeof(float);
  return l;
}

void check_inputs(const char* op, const SparseConfig& cfg, const DecodeShape& s) {
  check_sparse_config(op, cfg);
  check_decode_shape(op, s);
  INFLLM_CHECK(s.D == 64 || s.D == 128, op, ": head dim D=", s.D,
               " is not supported by the CUDA kernels (64 or 128)");
  INFLLM_CHECK(s.Hq / s.Hkv <= kMaxGroup, op, ": GQA group G=Hq/Hkv=", s.Hq / s.Hkv, " exceeds ",
               kMaxGroup);
  INFLLM_CHECK(s.position / cfg.block_size < kMaxSelectBlocks, op, ": position ", s.position,
               " lies in block ", s.position / cfg.block_size, "; the CUDA decode selection holds ",
               kMaxSelectBlocks, " blocks (a larger attention.block_size reaches further)");
}

}  // namespace

size_t select_decode_blocks_workspace_bytes(const SparseConfig& cfg, const DecodeShape& s) {
  check_inputs("cuda::select_decode_blocks_workspace_bytes", cfg, s);
  return layout(cfg, s).bytes;
}

void select_decode_blocks(const SparseConfig& cfg, const DecodeShape& s, const bf16_bits* q,
                          const bf16_bits* kc, int32_t* blocks, void* workspace, void* stream_ptr) {
  check_inputs("cuda::select_decode_blocks", cfg, s);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const Layout l = layout(cfg, s);
  const int G = s.Hq / s.Hkv;
  const float c = float(double(s.scale) * 1.4426950408889634);
  float2* partial = static_cast<float2*>(workspace);
  float* logits = reinterpret_cast<float*>(static_cast<char*>(workspace) + l.partial_bytes);
  if (l.n > 0) {
    const LogitsArgs la{reinterpret_cast<const bf16*>(q),
                        reinterpret_cast<const bf16*>(kc),
                        logits,
                        partial,
                        s.Hkv,
                        G,
                        l.n,
                        c};
    const dim3 grid(l.ctas, s.Hkv);
    if (s.D == 64)
      ckey_logits_kernel<64><<<grid, kThreads, 0, stream>>>(la);
    else
      ckey_logits_kernel<128><<<grid, kThreads, 0, stream>>>(la);
    CUDA_CHECK_LAUNCH();
  }
  select_kernel<<<s.Hkv, kSelectThreads, 0, stream>>>(
      SelectArgs{logits, partial, blocks, cfg, G, l.n, l.ctas, s.position, c});
  CUDA_CHECK_LAUNCH();
}

void append_compressed_keys(const SparseConfig& cfg, int Hkv, int D, const bf16_bits* k,
                            KernelRange range, bf16_bits* kc, void* stream) {
  check_sparse_config("cuda::append_compressed_keys", cfg);
  INFLLM_CHECK(Hkv > 0 && D > 0 && range.first >= 0, "cuda::append_compressed_keys: Hkv=", Hkv,
               " D=", D, " first=", range.first);
  if (range.end <= range.first) return;
  append_kernel<<<range.end - range.first, 128, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const bf16*>(k), reinterpret_cast<bf16*>(kc), Hkv * D, range.first,
      cfg.kernel_size, cfg.kernel_stride);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm::attention::cuda
