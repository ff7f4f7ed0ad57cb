// The passes that the CUDA entry points (flash_attention.cu) run, by file; the Hopper passes are
// in flash_attention_sm90.h. Internal to the attention library.
//   flash_attention_dense_rows.cu    portable dense forward / dQ (mma.sync)
//   flash_attention_sparse_rows.cu   portable sparse forward / dQ, token-major over block unions
//   flash_attention_dkdv.cu          portable dK/dV (dense, sparse) and the backward's small
//   kernels flash_attention_sparse_index.cu  block -> tokens index, work list, tile lists
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "attention/flash_attention_problem.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {

// `count` elements of scratch memory from cudaMallocAsync on `stream` (the caller frees them
// there).
template <class T>
T* scratch(size_t count, cudaStream_t stream) {
  void* ptr = nullptr;
  CUDA_CHECK(cudaMallocAsync(&ptr, std::max<size_t>(count, 1) * sizeof(T), stream));
  return static_cast<T*>(ptr);
}

// Throws when a rows kernel's `smem` bytes exceed what this GPU grants a CTA.
inline void check_rows_smem(const char* op, size_t smem) {
  int device = 0, smem_max = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  INFLLM_CHECK(smem <= size_t(smem_max), op, ": needs ", smem, " bytes of shared memory (max ",
               smem_max, "); lower max_blocks or T");
}

// --- flash_attention_sparse_index.cu
// The block -> tokens index of every selected block (tiles.tile_blocks == nullptr) or of the
// blocks outside each token's tile list (the Hopper far forward), walked in chunks of
// `chunk_tiles` query tiles; free it with free_sparse_index.
SparseIndex build_sparse_index(const Problem& p, const SparseSums& tiles, int chunk_tiles,
                               cudaStream_t stream);
void free_sparse_index(const SparseIndex& index, cudaStream_t stream);
// Chunk length of the Hopper block-major passes, by bytes of query sums per chunk.
int sparse_chunk_tiles(const Problem& p, int D);
// Throws unless every query row number (b T + t) heads + h fits 32 bits, as the Hopper sparse
// kernels compute them.
void check_rows_fit_int(const char* op, const Problem& p);
// The tile lists and row masks of the Hopper sparse forward into sums.tile_blocks, tile_counts
// and row_masks (scratch; free_tile_lists frees them).
void build_tile_lists(const char* op, const Problem& p, SparseSums& sums, cudaStream_t stream);
void free_tile_lists(const SparseSums& sums, cudaStream_t stream);

// --- flash_attention_dkdv.cu: the backward's small kernels, for both paths.
// delta = rowsum(dO * O), [B, Hq, T]; with lse_rows set, delta is token-major [B, T, Hq] and
// lse_rows gets a token-major copy of lse (the Hopper sparse backward reads them so).
void row_deltas(int D, const bf16* out, const bf16* dout, const float* lse, float* delta,
                float* lse_rows, const Problem& p, cudaStream_t stream);
// a.dk, a.dv = the sum of a.splits f32 partials a.dk_part, a.dv_part, in split order.
void reduce_splits(const KvArgs& a, const Problem& p, int D, cudaStream_t stream);
// a.dk, a.dv rows of the sparse blocks walked in several chunks, from the f32 sums a.dk_acc,
// dv_acc.
void finalize_chunked(const KvArgs& a, const Problem& p, int D, cudaStream_t stream);

namespace portable {

// Forward (O, lse) or, with `backward`, dQ of the dense or the sparse schedule (p.blocks set).
void dense_rows(const char* op, bool backward, int D, const RowsArgs& a, const Problem& p,
                cudaStream_t stream);
void sparse_rows(const char* op, bool backward, int D, const RowsArgs& a, const Problem& p,
                 cudaStream_t stream);
// dK and dV: dense (a.splits CTAs per KV head) or sparse (a.index, chunked blocks into a.dk_acc,
// a.dv_acc).
void dkdv(bool sparse, int D, const KvArgs& a, const Problem& p, cudaStream_t stream);

}  // namespace portable

}  // namespace infllm::attention::cuda
