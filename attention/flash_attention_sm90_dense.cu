// Dense causal attention on Hopper with warpgroup MMAs (flash_attention_sm90.h): the forward and
// dQ row passes (flash_attention_sm90_rows.cuh), the dK/dV pass, and the choices between the row
// passes and the pipelined forward (flash_attention_sm90_forward.cu, INFLLM_ATTENTION_FWD), dQ
// (flash_attention_sm90_dq.cu, INFLLM_ATTENTION_DQ) and dK/dV
// (flash_attention_sm90_dkdv_pipelined.cu, INFLLM_ATTENTION_DKDV), the pipelines' tile copy
// (INFLLM_ATTENTION_COPY) and the forward's exponentials (INFLLM_ATTENTION_EXP2).
//  * dK/dV: 128 keys of one KV head per CTA (64 per warpgroup); walks 64-query tiles from the
//    diagonal to the end for each head of its share of the group. S^T = K Q^T and dP^T = V dO^T
//    put keys on the accumulator rows, so P^T and dS^T are A fragments in registers for
//    dV += P^T dO and dK += dS^T Q. dK and dV stay in registers; no atomics.
//  * fused dQ (kFusedDq: DenseDq::fused with INFLLM_ATTENTION_DKDV=rows or
//    INFLLM_ATTENTION_COPY=cp_async; the pipelined pass has its own, with bulk reductions): the
//    dK/dV pass also stores each tile's dS^T (bf16, [128 keys][64 queries]) to shared memory and
//    computes dQ = dS K for the tile's 64 queries over the CTA's 128 keys, added into f32 query
//    sums with atomics (add_dq), so the row pass's recomputation of S and dP disappears: 5 matmul
//    units instead of 7.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_rows.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"
#include "core/error.h"

namespace infllm::attention::cuda::sm90 {

// Forward (kBackward = false: O, lse) or dQ (kBackward = true) of 128 query rows of one head.
template <int D, bool kBackward>
__global__ void __launch_bounds__(kThreads, 1) dense_rows_kernel(RowsArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  rows_pass<D, kBackward, false>(a, p);
#endif
}

template <int D, bool kFusedDq>
constexpr size_t dkdv_smem() {
  return 1024 + size_t(2) * kRows * D * 2 +                   // K, V
         (kFusedDq ? size_t(kRows) * kDkdvQueries * 2 : 0) +  // dS^T
         2 * (size_t(2) * kDkdvQueries * D * 2 +
              2 * kDkdvQueries * 4);  // 2 stages: q, dO, lse, delta
}

// 128 keys of one KV head per CTA (64 per warpgroup), 64-query tiles from the diagonal to the end
// for each head of the CTA's share of the group. kFusedDq: also dQ += dS K of every tile into the
// f32 query sums a.dq_acc (unscaled): both warpgroups store their dS^T halves, meet at named
// barrier 1, and at D = 128 each computes 64 of dQ's columns over all 128 keys (m64n64, as many
// MMA steps as one dK/dV product); at D = 64 (no m64n32 from a 128B-swizzled tile) the warpgroups
// take turns, step by step, with all 64 columns. The next step's barrier (tiles_landed) comes
// after every MMA that reads dS^T has finished, so one buffer serves every step.
template <int D, bool kFusedDq>
__global__ void __launch_bounds__(kThreads, 1) dense_dkdv_kernel(KvArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kQ = kDkdvQueries;
  extern __shared__ unsigned char smem_raw[];
  bf16* k_tile = aligned_smem(smem_raw);                 // [128][D]
  bf16* v_tile = k_tile + kRows * D;                     // [128][D]
  bf16* ds_tile = v_tile + kRows * D;                    // kFusedDq: dS^T [128 keys][64 queries]
  bf16* stages = ds_tile + (kFusedDq ? kRows * kQ : 0);  // 2 x (q [64][D], dO [64][D])
  float* row_stats = reinterpret_cast<float*>(stages + 2 * 2 * kQ * D);  // 2 x (lse, delta) [64]
  auto q_tile = [&](int i) { return stages + (i & 1) * 2 * kQ * D; };
  auto do_tile = [&](int i) { return q_tile(i) + kQ * D; };
  auto lse_of = [&](int i) { return row_stats + (i & 1) * 2 * kQ; };
  auto delta_of = [&](int i) { return lse_of(i) + kQ; };

  const int key0 = blockIdx.x * kRows;
  const int b = blockIdx.y / p.Hkv, kvh = blockIdx.y % p.Hkv;
  const int heads = p.G / a.splits, head0 = kvh * p.G + blockIdx.z * heads;
  const int group = warpgroup_index(), warp = threadIdx.x % 128 / 32, lane = threadIdx.x % 32;
  const int group_key0 = key0 + group * 64;
  // This warpgroup's half of dS^T: keys group_key0 .. + 63 are rows 64 group .. + 63, a
  // contiguous [64][64] tile of 8 KB (one panel), which dkdv_tile fills or the zeros do.
  bf16* group_ds = kFusedDq ? ds_tile + group * 64 * kQ : nullptr;
  int key[2];  // the thread's rows (keys): accumulator registers 4c + 2r + (0, 1) are key r
#pragma unroll
  for (int r = 0; r < 2; ++r) key[r] = group_key0 + warp * 16 + lane / 4 + 8 * r;

  // Step i: head head0 + i / n_tiles, queries (first_tile + i % n_tiles) * 64 .. + 63.
  const int first_tile = key0 / kQ, n_tiles = (p.T + kQ - 1) / kQ - first_tile;
  const int n_steps = heads * n_tiles;
  auto load_step = [&](int i) {
    const int head = head0 + i / n_tiles, q0 = (first_tile + i % n_tiles) * kQ;
    load_tile<D, kQ>(q_tile(i), a.q, b, head, p.q_heads, q0, p.T);
    load_tile<D, kQ>(do_tile(i), a.dout, b, head, p.o_heads, q0, p.T);
    if (threadIdx.x < 2 * kQ) {
      const int t = q0 + threadIdx.x % kQ;
      const float* src = threadIdx.x < kQ ? a.lse : a.delta;
      cp_async_4(lse_of(i) + threadIdx.x, src + (size_t(b) * p.Hq + head) * p.T + t, t < p.T);
    }
    cp_async_commit();
  };
  load_tile<D, kRows>(k_tile, a.k, b, kvh, p.kv_heads, key0, p.T);
  load_tile<D, kRows>(v_tile, a.v, b, kvh, p.kv_heads, key0, p.T);
  load_step(0);

  float dk[D / 2] = {}, dv[D / 2] = {};  // m64 x D accumulators
  for (int i = 0; i < n_steps; ++i) {
    tiles_landed();
    if (i + 1 < n_steps) load_step(i + 1);
    const int head = head0 + i / n_tiles, q0 = (first_tile + i % n_tiles) * kQ;
    // Every query before every key of this warpgroup: warpgroup 1 on the diagonal tile.
    const bool seen = q0 + kQ - 1 >= group_key0;
    if (seen)
      dkdv_tile<D, kRows>(
          dk, dv, k_tile, v_tile, group * 64, q_tile(i), do_tile(i), lse_of(i), delta_of(i), p,
          lane,
          [&](int col, int r) {
            const int query = q0 + col;
            return query >= key[r] && query < p.T;
          },
          kFusedDq ? ds_tile : nullptr);
    if constexpr (kFusedDq) {
      if (!seen) {  // dS^T = 0 (8 KB: 4 16-byte stores per thread)
        uint4* zero = reinterpret_cast<uint4*>(group_ds);
        for (int j = threadIdx.x % 128; j < 64 * kQ * 2 / 16; j += 128) zero[j] = uint4{};
      }
      wgmma::fence_async_proxy();  // this thread's dS^T stores, before the tensor cores read them
      named_barrier_sync(1, kThreads);
      // Tile row `row` % 64 (add_query_sums counts warpgroup 1's rows from 64) is query
      // q0 + row % 64: padding at or past T, else the sums row of (b, query, head).
      auto dq_row = [&](int row) {
        const int query = q0 + row % 64;
        return query < p.T ? (b * p.T + query) * p.Hq + head : -1;
      };
      if constexpr (D == 128)
        add_dq<D, kRows, kRows, 64>(a.dq_acc, ds_tile, k_tile, dq_row, p.G_divisor, lane,
                                    group * 64);
      else if (group == (i & 1))
        add_dq<D, kRows, kRows>(a.dq_acc, ds_tile, k_tile, dq_row, p.G_divisor, lane);
    }
  }
  store_dkdv<D>(a, p, b, kvh, key, lane, false, dk, dv);
#endif
}

// ---------------------------------------------------------------------------------------------
// Launchers.
namespace {

template <bool kBackward>
void launch_dense_rows(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hq);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(dense_rows_kernel<kD, kBackward>, grid, rows_smem<kD, kBackward>(), stream, a, p);
  });
}

}  // namespace

bool available() {
  const char* kernels = std::getenv("INFLLM_ATTENTION_KERNELS");
  if (kernels != nullptr && std::strcmp(kernels, "portable") == 0) return false;
  // sm_90a machine code only loads on sm_90 GPUs; elsewhere the kernel comes from the portable
  // PTX, whose body is empty, and reports a lower binary version.
  static const bool compiled_for_this_gpu = [] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, dense_rows_kernel<64, false>) == cudaSuccess &&
           attr.binaryVersion == 90;
  }();
  return compiled_for_this_gpu;
}

namespace {
// The index in `choices` of the kernel choice `variable` holds: 0 (the default) when it is unset or
// empty; another value throws, naming the variable, what it chooses and the values it takes.
int kernel_choice(const char* variable, std::initializer_list<const char*> choices,
                  const char* what) {
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0') return 0;
  int index = 0;
  std::string names;
  for (const char* choice : choices) {
    if (std::strcmp(value, choice) == 0) return index;
    names += (index == 0                         ? ""
              : index + 1 == int(choices.size()) ? " or "
                                                 : ", ") +
             std::string(choice) + (index == 0 ? " (the default)" : "");
    ++index;
  }
  fail(variable, "=", value, " is not a ", what, "; use ", names);
}
}  // namespace

DenseDq dense_dq_mode() {
  constexpr DenseDq modes[] = {DenseDq::fused, DenseDq::pipelined, DenseDq::separate};
  return modes[kernel_choice("INFLLM_ATTENTION_DQ", {"fused", "pipelined", "separate"},
                             "dQ path of the Hopper dense backward")];
}

bool dense_forward_pipelined() {
  return kernel_choice("INFLLM_ATTENTION_FWD", {"pipelined", "rows"},
                       "kernel of the Hopper dense forward") == 0;
}

bool dense_dkdv_pipelined() {
  return kernel_choice("INFLLM_ATTENTION_DKDV", {"pipelined", "rows"},
                       "kernel of the Hopper dense dK/dV pass") == 0;
}

bool dense_copy_tma() {
  return kernel_choice("INFLLM_ATTENTION_COPY", {"tma", "cp_async"},
                       "tile copy of the Hopper dense pipelines") == 0;
}

int dense_forward_fma_exp_every() {
  constexpr int every[] = {0, 8, 4, 2};
  return every[kernel_choice("INFLLM_ATTENTION_EXP2", {"mufu", "fma8", "fma4", "fma2"},
                             "source of the Hopper dense forward's exponentials")];
}

void forward(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool pipelined,
             bool tma, int fma_exp_every) {
  if (pipelined)
    pipelined_forward(D, a, p, stream, tma, fma_exp_every);
  else
    launch_dense_rows<false>(D, a, p, stream);
}

void backward_dq(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool pipelined,
                 bool tma) {
  if (pipelined)
    pipelined_dq(D, a, p, stream, tma);
  else
    launch_dense_rows<true>(D, a, p, stream);
}

int dkdv_splits(const Problem& p) {
  // Eight CTAs' worth per SM (they run one at a time): the causal key tiles differ in length, and
  // the small ones fill in behind the long ones (docs/attention_kernels.md).
  const int base = (p.T + kRows - 1) / kRows * p.B * p.Hkv, target = 8 * sm_count();
  int splits = 1;
  while (base * splits < target && p.G % (splits * 2) == 0) splits *= 2;
  return splits;
}

bool dq_tile_sums(bool pipelined, bool tma) {
  return pipelined && tma;
}

void backward_dkdv(int D, const KvArgs& a, const Problem& p, cudaStream_t stream, bool pipelined,
                   bool tma) {
  if (pipelined && (a.dq_acc == nullptr || dq_tile_sums(pipelined, tma))) {
    pipelined_dkdv(D, a, p, stream, tma);
    return;
  }
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hkv, a.splits);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (a.dq_acc != nullptr)
      launch(dense_dkdv_kernel<kD, true>, grid, dkdv_smem<kD, true>(), stream, a, p);
    else
      launch(dense_dkdv_kernel<kD, false>, grid, dkdv_smem<kD, false>(), stream, a, p);
  });
}

}  // namespace infllm::attention::cuda::sm90
