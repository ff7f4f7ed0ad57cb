// Attention on Hopper with warpgroup MMAs (wgmma) instead of mma.sync: the forward and the backward
// of the dense schedule (flash_attention_sm90_dense.cu: dK/dV, and dQ from a separate row pass,
// from the dK/dV pass or from the pipelined dQ kernel: INFLLM_ATTENTION_DQ), the sparse forward in
// two passes (each 128-row tile's list of shared blocks densely, then the other blocks block-major;
// SparseSums) and the sparse backward (dK, dV and dQ in one pass). Same arguments, same results up
// to f32 summation order; flash_attention.cu calls them when available() and keeps its portable
// kernels for other GPUs, for the rare sparse forward whose far scores would overflow the sums, and
// when the environment sets INFLLM_ATTENTION_KERNELS=portable (A/B comparisons, tests of the
// portable path).
#pragma once

#include <cuda_runtime.h>

#include "attention/flash_attention_problem.cuh"

namespace infllm::attention::cuda::sm90 {

// True when this binary holds sm_90a code for the current GPU and the environment allows it.
bool available();

// D = 64 or 128. forward writes a.out and a.lse_out: with the row pass, or (pipelined) with the
// warp-specialized pipeline of flash_attention_sm90_forward.cu, whose launcher is
// pipelined_forward. backward_dq writes a.dq from a.lse and a.delta: with the row pass, or
// (pipelined) with the warp-specialized pipeline of flash_attention_sm90_dq.cu, whose launcher is
// pipelined_dq. `tma`: the pipelines load their K/V ring with the TMA (dense_copy_tma); the row
// passes ignore it. `fma_exp_every`: the pipelined forward's share of exponentials on the FMA pipe
// (dense_forward_fma_exp_every); the row pass ignores it.
void forward(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool pipelined,
             bool tma, int fma_exp_every);
void pipelined_forward(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool tma,
                       int fma_exp_every);
void backward_dq(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool pipelined,
                 bool tma);
void pipelined_dq(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool tma);

// The sparse forward's two passes (p.blocks set). sparse_tile_pass writes a.sums (o_sum,
// row_max, row_sum) for every row from the blocks of its tile list that a.sums.row_masks holds;
// sparse_far_forward then adds the far blocks of a.index into them and sets a.sums.overflow where
// a far score exceeds the first pass's maximum by more than kFarExponentLimit. sums_to_output
// ends the forward: out = o_sum / row_sum (bf16) and lse.
void sparse_tile_pass(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream);
void sparse_far_forward(int D, const FarArgs& a, const Problem& p, cudaStream_t stream);
void sums_to_output(int D, const SparseSums& sums, const Problem& p, bf16* out, float* lse,
                    cudaStream_t stream);

// Where the dense backward takes dQ from (INFLLM_ATTENTION_DQ):
//  * fused (unset, empty or "fused": the default): the dK/dV pass (two matmul units fewer; dQ's
//    f32 rounding depends on the order the CTAs' sums land, so it is not reproducible run to
//    run). With the pipelined dK/dV pass and the TMA (dq_tile_sums) each CTA adds a step's dQ
//    tile with one bulk reduction; otherwise the row kernel adds it with per-thread atomics;
//  * pipelined: backward_dq as the warp-specialized pipeline (pipelined_dq), the row pass's tile
//    math step for step, so the row pass's dQ, run-to-run deterministic;
//  * separate: the row pass backward_dq itself.
// Read at every call, so one process can time all three; throws on another value.
enum class DenseDq { separate, fused, pipelined };
DenseDq dense_dq_mode();

// Whether the dense forward runs the pipelined kernel (unset, empty or "pipelined": the default)
// or the row pass (INFLLM_ATTENTION_FWD=rows). Read at every call, so one process can time both;
// throws on another value.
bool dense_forward_pipelined();

// Whether the dense dK/dV pass (with dQ from a pass of its own) runs the warp-specialized
// pipeline of flash_attention_sm90_dkdv_pipelined.cu (unset, empty or "pipelined": the default)
// or the kernel whose 256 threads all copy and compute (INFLLM_ATTENTION_DKDV=rows). Read at
// every call, so one process can time both; throws on another value.
bool dense_dkdv_pipelined();

// Whether the dense pipelines load their rings (the forward's and dQ's K and V, the dK/dV pass's
// Q and dO) with the Tensor Memory Accelerator, one thread issuing each tile's boxes (unset,
// empty or "tma": the default), or with the producer warpgroup's 16-byte cp.async
// (INFLLM_ATTENTION_COPY=cp_async). The row passes copy with cp.async either way. Read at every
// call, so one process can time both; throws on another value.
bool dense_copy_tma();

// Where the pipelined dense forward's softmax takes its exponentials (INFLLM_ATTENTION_EXP2): all
// from the special-function unit (unset, empty or "mufu": the default; returns 0), or one column
// pair in 8, 4 or 2 from a polynomial on the FMA pipe ("fma8", "fma4", "fma2": returns 8, 4, 2;
// exp2_on_fma in flash_attention_mma.cuh). Read at every call, so one process can time each;
// throws on another value.
int dense_forward_fma_exp_every();

// CTAs per KV head for the dK/dV pass at this shape (the group's heads are split over CTAs until
// the GPU is full). With splits > 1, backward_dkdv writes f32 partial sums to a.dk_part/dv_part
// ([splits, B, T, Hkv, D]) for the caller to reduce; otherwise bf16 to a.dk/a.dv. `pipelined`
// runs pipelined_dkdv: the same CTAs, results and outputs, its query ring loaded by the TMA when
// `tma` (dense_copy_tma). With a.dq_acc set the pass also adds dS K (unscaled) of the CTA's heads
// into zeroed f32 sums, which a conversion turns into bf16 dq (scaled): when
// dq_tile_sums(pipelined, tma), pipelined_dkdv adds them per query tile of its step (128 queries
// at D = 64, 64 at D = 128; dq_tile_sums_size floats, dq_from_tile_sums converts), otherwise the
// row kernel adds them into query sums (query_sums_offset, [B, T, Hq, D]; dq_from_sums converts).
int dkdv_splits(const Problem& p);
void backward_dkdv(int D, const KvArgs& a, const Problem& p, cudaStream_t stream, bool pipelined,
                   bool tma);
void pipelined_dkdv(int D, const KvArgs& a, const Problem& p, cudaStream_t stream, bool tma);
bool dq_tile_sums(bool pipelined, bool tma);
size_t dq_tile_sums_size(int D, const Problem& p);
void dq_from_tile_sums(int D, const float* dq_acc, const Problem& p, bf16* dq, cudaStream_t stream);
// The sparse backward (p.blocks set, a.index of every selected block) in one block-major pass:
// dK and dV as bf16 to a.dk/a.dv, or f32 sums to a.dk_acc/dv_acc for blocks walked in chunks, and
// dS K (unscaled) added into the zeroed f32 query sums a.dq_acc, which dq_from_sums turns into
// bf16 dq (scaled).
void sparse_backward(int D, const KvArgs& a, const Problem& p, cudaStream_t stream);
void dq_from_sums(int D, const float* dq_acc, const Problem& p, bf16* dq, cudaStream_t stream);

}  // namespace infllm::attention::cuda::sm90
