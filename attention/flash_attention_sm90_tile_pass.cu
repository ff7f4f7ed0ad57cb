// The sparse forward's tile pass on Hopper (flash_attention_sm90.h, forward_tiles): the row pass
// of flash_attention_sm90_rows.cuh over each 128-row tile's list of shared blocks (SparseSums:
// its own two blocks, the local window, blocks that many of its tokens chose), two blocks per
// 128-key tile, keys of blocks outside a row's own list masked. It starts the f32 sums (o_sum,
// row_max, row_sum) that the block-major far pass (flash_attention_sm90_block_major.cu) adds the
// remaining blocks to.
#include <cuda_runtime.h>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_rows.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {

// At D = 64 two CTAs fit per SM in 128 registers (76 bytes spilled), which hides the list lookups
// and masks better than one CTA without spills (docs/attention_kernels.md has the figures).
template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 2 : 1)
    sparse_tile_pass_kernel(RowsArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  rows_pass<D, false, true>(a, p);
#endif
}

void sparse_tile_pass(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hq);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(sparse_tile_pass_kernel<kD>, grid, rows_smem<kD, false>(), stream, a, p);
  });
}

}  // namespace infllm::attention::cuda::sm90
