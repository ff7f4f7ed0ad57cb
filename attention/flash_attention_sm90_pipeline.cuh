// What the warp-specialized Hopper kernels share (the pipelined forward,
// flash_attention_sm90_forward.cu, and the pipelined dK/dV pass,
// flash_attention_sm90_dkdv_pipelined.cu): the producer warpgroup's size, the hand-over of
// registers between producer and consumer warpgroups (setmaxnreg), and the producer's copy of
// row tiles. The rings' mbarriers (init, wait, arrive, cp.async arrive) are
// flash_attention_mma.cuh's.
#pragma once

#include <cuda_runtime.h>

#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {

constexpr int kProducerThreads = 128;  // one warpgroup: setmaxnreg works per warpgroup

// load_tile's copy with the copying thread's index given (0 .. kCopyThreads - 1), for copiers
// that are not threads 0 .. kCopyThreads - 1 of the CTA (a producer warpgroup, a consumer
// warpgroup copying its own rows): rows [row0, row0 + kCopyRows) of head `head` of a
// [B, T, heads, D] tensor into rows tile_row0 .. of a swizzled [kTileRows][D] tile; rows >= T are
// zero-filled.
template <int D, int kTileRows, int kCopyThreads, int kCopyRows>
__device__ __forceinline__ void copy_rows(bf16* tile, const bf16* src, int b, int head, int heads,
                                          int row0, int T, int tile_row0, int thread) {
  constexpr int kChunks = D / 8, kRowsPerStep = kCopyThreads / kChunks;
  // Whole 8-row swizzle periods per step: the destination moves by a constant.
  static_assert(kCopyThreads % kChunks == 0 && kRowsPerStep % 8 == 0 &&
                kCopyRows % kRowsPerStep == 0);
  const int chunk = thread % kChunks, r0 = thread / kChunks;
  const bf16* from = src + ((size_t(b) * T + row0 + r0) * heads + head) * D + chunk * 8;
  const size_t step = size_t(kRowsPerStep) * heads * D;
  const uint32_t to = mma::smem_u32(tile + tile_offset<kTileRows>(tile_row0 + r0, chunk * 8));
  const int rows_left = T - row0 - r0;  // rows i * kRowsPerStep below it are in the sequence
  // Partly unrolled: producers run in few registers.
#pragma unroll 4
  for (int i = 0; i < kCopyRows / kRowsPerStep; ++i) {
    const bool valid = i * kRowsPerStep < rows_left;
    cp_async_16(to + i * kRowsPerStep * 128, valid ? from + i * step : src, valid);
  }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// setmaxnreg (sm_90a): a whole warpgroup lowers (release) or raises (claim) its threads'
// register count to kRegisters, a multiple of 8 in 24 .. 256. The kernel launches with the
// register count its thread count allows (__launch_bounds__); the producer releases first and
// the consumers' claims wait until the SM's register file has room.
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
  static_assert(kRegisters % 8 == 0 && kRegisters >= 24 && kRegisters <= 256);
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
  static_assert(kRegisters % 8 == 0 && kRegisters >= 24 && kRegisters <= 256);
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
#endif

}  // namespace infllm::attention::cuda::sm90
