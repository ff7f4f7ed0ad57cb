// CUDA flash attention (bf16 in/out, f32 accumulation): the entry points of flash_attention.h,
// which pick and order the passes of the dense causal and the InfLLM-V2 block-sparse schedules.
//
// On Hopper (sm90::available(), flash_attention_sm90.h) every pass runs with warpgroup MMAs:
//   dense forward   sm90 forward (the warp-specialized pipeline; with INFLLM_ATTENTION_FWD=rows
//                   the row pass)
//   dense backward  delta, sm90 dK/dV + dQ (split over CTAs, then reduce_splits; the
//                   warp-specialized pipeline, each tile's dQ added to f32 sums by a bulk
//                   reduction), dQ from its sums; with INFLLM_ATTENTION_DQ=pipelined (or
//                   separate) a dQ pass of its own first, the pipelined kernel (or the row
//                   pass); INFLLM_ATTENTION_DKDV=rows runs the dK/dV row kernel
//   sparse forward  tile lists, sm90 tile pass, block -> tokens index of the far pairs, sm90 far
//                   forward, sums -> O and lse; the portable sparse forward reruns only if a far
//                   score could have overflowed the sums (it checks the flag on the GPU)
//   sparse backward delta (token-major), block -> tokens index, sm90 fused dK/dV + dQ pass,
//                   dQ from its sums, chunked dK/dV sums -> bf16
// Other GPUs (and INFLLM_ATTENTION_KERNELS=portable) run the portable mma.sync passes
// (flash_attention_passes.h): rows kernels for the forward and dQ, dK/dV kernels, with dQ in its
// own pass (deterministic, at the price of recomputing S and dP), as does the Hopper dense
// backward with INFLLM_ATTENTION_DQ=pipelined; its default fused dQ saves that pass's S and dP (5
// matmul units instead of 7) and rounds dQ in an order-dependent way (f32 bulk reductions). The
// Hopper sparse backward adds dQ from its dK/dV pass too: with per-token block lists a
// token-major dQ pass copies a whole K/V block per (token, block) pair, where the block-major
// pass gathers only the token's Q and dO rows (docs/attention_kernels.md); it rounds dQ in an
// order-dependent way (f32 atomics).
#include <cuda_runtime.h>

#include "attention/flash_attention.h"
#include "attention/flash_attention_passes.h"
#include "attention/flash_attention_problem.cuh"
#include "attention/flash_attention_sm90.h"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

Problem make_problem(const char* op, const AttentionShape& s, const BlockList& bl) {
  check_attention_shape(op, s, bl);
  INFLLM_CHECK(s.D == 64 || s.D == 128, op, ": head dim D=", s.D,
               " is not supported by the CUDA kernels; use D=64 or D=128");
  Problem p{};
  p.B = s.B;
  p.T = s.T;
  p.Hq = s.Hq;
  p.Hkv = s.Hkv;
  p.G = s.Hq / s.Hkv;
  p.G_divisor = Divisor(p.G);
  p.nblocks = (s.T + kTile - 1) / kTile;
  p.scale = s.scale;
  p.scale_log2 = s.scale * kLog2e;
  p.blocks = bl.blocks;
  p.max_blocks = bl.max_blocks;
  INFLLM_CHECK(s.q_row % s.D == 0 && s.kv_row % s.D == 0, op, ": token strides q_row=", s.q_row,
               " and kv_row=", s.kv_row, " must be whole heads (multiples of D=", s.D, ")");
  p.q_heads = s.q_row > 0 ? int(s.q_row / s.D) : s.Hq;
  p.kv_heads = s.kv_row > 0 ? int(s.kv_row / s.D) : s.Hkv;
  p.o_heads = s.Hq;
  if (bl.blocks != nullptr) {
    INFLLM_CHECK(bl.block_size == kTile, op, ": sparse block_size=", bl.block_size,
                 " is not supported by the CUDA kernel; use block_size=64");
    INFLLM_CHECK(p.G <= 16, op, ": sparse attention packs the G=Hq/Hkv=", p.G,
                 " heads of a group into one 16-row MMA tile; use G <= 16");
  }
  return p;
}

// The portable forward (backward = false) or dQ pass of p's schedule.
void portable_rows(const char* op, bool backward, int D, const RowsArgs& a, const Problem& p,
                   cudaStream_t stream) {
  if (p.blocks != nullptr)
    portable::sparse_rows(op, backward, D, a, p, stream);
  else
    portable::dense_rows(op, backward, D, a, p, stream);
}

// Hopper: the tile pass starts the sums, the far pass adds the other blocks, out and lse follow
// from the sums. If a far score could have overflowed them, the portable kernel reruns the whole
// forward and overwrites both (it checks the flag on the GPU: no host round trip).
void sparse_forward_hopper(const char* op, RowsArgs a, const Problem& p, int D,
                           cudaStream_t stream) {
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  SparseSums& sums = a.sums;
  build_tile_lists(op, p, sums, stream);
  sums.o_sum = scratch<float>(rows * D, stream);
  sums.row_max = scratch<float>(rows, stream);
  sums.row_sum = scratch<float>(rows, stream);
  sums.overflow = scratch<int>(1, stream);
  CUDA_CHECK(cudaMemsetAsync(sums.overflow, 0, sizeof(int), stream));
  sm90::sparse_tile_pass(D, a, p, stream);
  const FarArgs far{a.q, a.k, a.v, build_sparse_index(p, sums, sparse_chunk_tiles(p, D), stream),
                    sums};
  sm90::sparse_far_forward(D, far, p, stream);
  sm90::sums_to_output(D, sums, p, a.out, a.lse_out, stream);
  a.run_if = sums.overflow;
  portable::sparse_rows(op, false, D, a, p, stream);
  free_sparse_index(far.index, stream);
  free_tile_lists(sums, stream);
  for (void* ptr : {static_cast<void*>(sums.o_sum), static_cast<void*>(sums.row_max),
                    static_cast<void*>(sums.row_sum), static_cast<void*>(sums.overflow)})
    CUDA_CHECK(cudaFreeAsync(ptr, stream));
}

// dK and dV of the sparse schedule (and, on Hopper, dQ from the same pass into ra.dq).
void sparse_backward(const char* op, const RowsArgs& ra, KvArgs ka, const Problem& p, int D,
                     bool hopper, cudaStream_t stream) {
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  // The key sums cover whole 64-key blocks (key_sums_offset).
  const size_t n = size_t(p.B) * p.nblocks * kTile * p.Hkv * D, dq_n = rows * D;
  // Hopper: the block-major dK/dV pass adds every pair's dQ into f32 query sums.
  if (hopper) {
    check_rows_fit_int(op, p);
    ka.dq_acc = scratch<float>(dq_n, stream);
    CUDA_CHECK(cudaMemsetAsync(ka.dq_acc, 0, dq_n * sizeof(float), stream));
  }
  const SparseIndex index = build_sparse_index(
      p, SparseSums{}, hopper ? sparse_chunk_tiles(p, D) : kSparseChunkTiles, stream);
  ka.index = index;
  ka.dk_acc = scratch<float>(n, stream);
  ka.dv_acc = scratch<float>(n, stream);
  CUDA_CHECK(cudaMemsetAsync(ka.dk_acc, 0, n * sizeof(float), stream));
  CUDA_CHECK(cudaMemsetAsync(ka.dv_acc, 0, n * sizeof(float), stream));
  if (hopper) {
    sm90::sparse_backward(D, ka, p, stream);
    sm90::dq_from_sums(D, ka.dq_acc, p, ra.dq, stream);
    CUDA_CHECK(cudaFreeAsync(ka.dq_acc, stream));
  } else {
    portable::dkdv(true, D, ka, p, stream);
  }
  finalize_chunked(ka, p, D, stream);
  CUDA_CHECK(cudaFreeAsync(ka.dk_acc, stream));
  CUDA_CHECK(cudaFreeAsync(ka.dv_acc, stream));
  free_sparse_index(index, stream);
}

// dK and dV of the dense schedule: the group's heads split over CTAs until there are enough CTAs
// to fill the GPU, their f32 partials reduced in a fixed order. `pipelined` (Hopper) runs the
// warp-specialized dK/dV kernel, its query ring loaded by the TMA when `tma`. With `dq` set
// (Hopper, fused dQ) the pass also adds dS K into zeroed f32 sums, converted to bf16 dq at the
// end: per query tile of its step from the pipelined kernel with the TMA, else as query sums.
void dense_dkdv(const char* op, KvArgs ka, const Problem& p, int D, bool hopper, bf16* dq,
                bool pipelined, bool tma, cudaStream_t stream) {
  const int base = p.nblocks * p.B * p.Hkv, target = 2 * sm_count();
  while (base * ka.splits < target && p.G % (ka.splits * 2) == 0) ka.splits *= 2;
  if (hopper) ka.splits = sm90::dkdv_splits(p);
  if (ka.splits > 1) {
    const size_t n = size_t(p.B) * p.T * p.Hkv * D;
    ka.dk_part = scratch<float>(ka.splits * n, stream);
    ka.dv_part = scratch<float>(ka.splits * n, stream);
  }
  // The fused dQ's sums: per query tile from the pipelined pass, else as the sparse backward's.
  const bool tile_sums = hopper && sm90::dq_tile_sums(pipelined, tma);
  const size_t dq_n = tile_sums ? sm90::dq_tile_sums_size(D, p) : size_t(p.B) * p.T * p.Hq * D;
  if (dq != nullptr) {
    if (!tile_sums) check_rows_fit_int(op, p);  // query_sums_offset's int rows
    ka.dq_acc = scratch<float>(dq_n, stream);
    CUDA_CHECK(cudaMemsetAsync(ka.dq_acc, 0, dq_n * sizeof(float), stream));
  }
  if (hopper)
    sm90::backward_dkdv(D, ka, p, stream, pipelined, tma);
  else
    portable::dkdv(false, D, ka, p, stream);
  if (dq != nullptr) {
    if (tile_sums)
      sm90::dq_from_tile_sums(D, ka.dq_acc, p, dq, stream);
    else
      sm90::dq_from_sums(D, ka.dq_acc, p, dq, stream);
    CUDA_CHECK(cudaFreeAsync(ka.dq_acc, stream));
  }
  if (ka.splits > 1) {
    reduce_splits(ka, p, D, stream);
    CUDA_CHECK(cudaFreeAsync(ka.dk_part, stream));
    CUDA_CHECK(cudaFreeAsync(ka.dv_part, stream));
  }
}

}  // namespace

void attention_forward(const AttentionShape& shape, const bf16_bits* q, const bf16_bits* k,
                       const bf16_bits* v, BlockList blocks, bf16_bits* out, float* lse,
                       void* stream) {
  const char* op = "attention_forward (cuda)";
  const Problem p = make_problem(op, shape, blocks);
  RowsArgs a{};
  a.q = reinterpret_cast<const bf16*>(q);
  a.k = reinterpret_cast<const bf16*>(k);
  a.v = reinterpret_cast<const bf16*>(v);
  a.out = reinterpret_cast<bf16*>(out);
  a.lse_out = lse;
  const auto s = static_cast<cudaStream_t>(stream);
  const bool hopper = sm90::available();
  // The dense Hopper forward's kernel, K/V copy and exponentials (INFLLM_ATTENTION_FWD,
  // INFLLM_ATTENTION_COPY, INFLLM_ATTENTION_EXP2; a bad value throws on every GPU).
  const bool dense = blocks.blocks == nullptr;
  const bool pipelined = dense && sm90::dense_forward_pipelined();
  const bool tma = dense && sm90::dense_copy_tma();
  const int fma_exp_every = dense ? sm90::dense_forward_fma_exp_every() : 0;
  if (dense && hopper)
    sm90::forward(shape.D, a, p, s, pipelined, tma, fma_exp_every);
  else if (hopper)  // sparse
    sparse_forward_hopper(op, a, p, shape.D, s);
  else
    portable_rows(op, false, shape.D, a, p, s);
}

void attention_backward(const AttentionShape& shape, const bf16_bits* q, const bf16_bits* k,
                        const bf16_bits* v, const bf16_bits* out, const float* lse,
                        const bf16_bits* dout, BlockList blocks, bf16_bits* dq, bf16_bits* dk,
                        bf16_bits* dv, void* stream_ptr) {
  const char* op = "attention_backward (cuda)";
  const Problem p = make_problem(op, shape, blocks);
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const bool sparse = blocks.blocks != nullptr, hopper = sm90::available();
  // Dense on Hopper: dQ from the pipelined dQ kernel, its row pass or the dK/dV pass
  // (INFLLM_ATTENTION_DQ), and dK/dV from the pipelined kernel unless INFLLM_ATTENTION_DKDV=rows
  // (with the fused dQ also with INFLLM_ATTENTION_COPY=cp_async: the pipelined fused pass loads
  // with the TMA); the pipelines' tile copy (INFLLM_ATTENTION_COPY). A bad value of any throws on
  // every GPU.
  const sm90::DenseDq dq_mode = sparse ? sm90::DenseDq::separate : sm90::dense_dq_mode();
  const bool tma = !sparse && sm90::dense_copy_tma();
  const bool fused_dq = !sparse && hopper && dq_mode == sm90::DenseDq::fused;
  const bool pipelined_dkdv = !sparse && sm90::dense_dkdv_pipelined() && hopper;
  const int D = shape.D;
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  float* delta = scratch<float>(rows, stream);
  // The Hopper sparse passes read lse and delta token-major (KvArgs, RowsArgs).
  float* lse_rows = sparse && hopper ? scratch<float>(rows, stream) : nullptr;
  row_deltas(D, reinterpret_cast<const bf16*>(out), reinterpret_cast<const bf16*>(dout), lse, delta,
             lse_rows, p, stream);

  RowsArgs ra{};
  ra.q = reinterpret_cast<const bf16*>(q);
  ra.k = reinterpret_cast<const bf16*>(k);
  ra.v = reinterpret_cast<const bf16*>(v);
  ra.dout = reinterpret_cast<const bf16*>(dout);
  ra.lse = lse;
  ra.delta = delta;
  ra.dq = reinterpret_cast<bf16*>(dq);
  if (!sparse && hopper && !fused_dq)
    sm90::backward_dq(D, ra, p, stream, dq_mode == sm90::DenseDq::pipelined, tma);
  else if (!hopper)  // Hopper otherwise: the dK/dV pass below gives dQ
    portable_rows(op, true, D, ra, p, stream);

  KvArgs ka{};
  ka.q = ra.q;
  ka.k = ra.k;
  ka.v = ra.v;
  ka.dout = ra.dout;
  ka.lse = lse_rows != nullptr ? lse_rows : lse;
  ka.delta = delta;
  ka.dk = reinterpret_cast<bf16*>(dk);
  ka.dv = reinterpret_cast<bf16*>(dv);
  ka.splits = 1;
  if (sparse)
    sparse_backward(op, ra, ka, p, D, hopper, stream);
  else
    dense_dkdv(op, ka, p, D, hopper, fused_dq ? ra.dq : nullptr, pipelined_dkdv, tma, stream);
  CUDA_CHECK(cudaFreeAsync(delta, stream));
  if (lse_rows != nullptr) CUDA_CHECK(cudaFreeAsync(lse_rows, stream));
}

}  // namespace infllm::attention::cuda
