// TMA loads of the pipelines' rings, the default (INFLLM_ATTENTION_COPY=cp_async has 128 producer
// threads issue 16-byte cp.async instead): one thread of the producer warpgroup copies each tile
// with the Tensor Memory Accelerator: K and V tiles of the forward's and dQ's ring
// (KvRing<..., kTma = true>), Q and dO tiles of the dK/dV pass's query ring. The layout in shared
// memory is the same 128B-swizzled tile (tile_offset): column panels of [rows][64] bf16, 128
// bytes per row, 16-byte chunk c of row r at chunk c ^ (r % 8). A tensor map with
// CU_TENSOR_MAP_SWIZZLE_128B and a box of 64 columns x rows writes exactly one such panel when
// its destination is 1024-byte aligned (the hardware swizzles with address bits 4-6 ^ 7-9: row r
// of a 128-byte-row box sits at byte 128 r, so bits 7-9 are r % 8 only from a 1024-byte
// boundary); D = 128 takes two boxes per tile, one per panel. Rows past T are out of bounds of
// the map's T dimension: the TMA fills them with zeros and still counts their bytes, so every
// tile completes its barrier with rows * D * 2 bytes. The other direction, the fused dQ's bulk
// reductions of a shared f32 tile into global sums (tma::reduce_add), goes through the same
// engine without a tensor map.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums only: the encoder comes from the runtime
#include <cuda_runtime.h>

#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_problem.cuh"

namespace infllm::attention::cuda::sm90 {

// The tensor maps of one call's K and V: each a 4-d view {D, Hkv, T, B} (innermost first) of a
// [B, T, kv_heads, D] tensor (kv_heads >= Hkv heads per token: the packed QKV layout's token
// stride), box {64, 1, kKeys, 1}. A kernel takes them as a __grid_constant__ parameter: the TMA
// reads a map from the kernel's parameter space (or global memory), never from a local copy.
struct KvMaps {
  CUtensorMap k, v;
};

// The same for the dK/dV pass's query side: Q and dO, each a view {D, Hq, T, B} of a [B, T,
// q_heads (o_heads), D] tensor, box {64, 1, kQueries, 1}.
struct QueryMaps {
  CUtensorMap q, dout;
};

// Host: the maps for tiles of kKeys keys (kQueries queries) at head dim D (64 or 128). Throw when
// the driver has no cuTensorMapEncodeTiled or rejects a view (a base address that is not 16-byte
// aligned).
KvMaps make_kv_maps(int D, int kKeys, const bf16* k, const bf16* v, const Problem& p);
QueryMaps make_query_maps(int D, int kQueries, const bf16* q, const bf16* dout, const Problem& p);

namespace tma {

// The producer's arrival on a full barrier, announcing `bytes` the TMA will complete: the phase
// completes once the arrival count (1) is reached and that many bytes have landed.
__device__ __forceinline__ void arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(mma::smem_u32(bar)),
               "r"(bytes)
               : "memory");
}

// One box of `map` at coordinates {c0, c1, c2, c3} (innermost first) into shared memory at
// `dst`, completing `bar`'s transaction bytes. The CTA's own shared::cta address is a valid
// shared::cluster address (a launch without clusters is a cluster of one).
__device__ __forceinline__ void load_4d(uint32_t dst, const CUtensorMap* map, uint64_t* bar, int c0,
                                        int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, "
      "%4, %5, %6}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(mma::smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2),
      "r"(c3)
      : "memory");
}

// The D / 64 boxes of head `head`'s rows row0 .. row0 + kTileRows - 1 of sequence b into a
// swizzled [kTileRows][D] tile (1024-byte aligned), completing `bar`'s transaction bytes (the
// caller announces kTileRows * D * 2 of them).
template <int D, int kTileRows>
__device__ __forceinline__ void load_rows(bf16* tile, const CUtensorMap* map, uint64_t* bar, int b,
                                          int head, int row0) {
#pragma unroll
  for (int panel = 0; panel < D / 64; ++panel)
    load_4d(mma::smem_u32(tile + panel * kTileRows * 64), map, bar, panel * 64, head, row0, b);
}

// The other direction, for the fused dK/dV/dQ pass's dQ sums: adds `bytes` (a multiple of 16) of
// f32 at `src` in shared memory into global memory at `dst` element by element (both 16-byte
// aligned), in the background; bulk_commit closes the thread's group of such reductions, and
// bulk_wait_read<N> waits until at most N of its groups still read their shared memory
// (bulk_wait_done<0>: until every group's sums have been added).
__device__ __forceinline__ void reduce_add(float* dst, const float* src, uint32_t bytes) {
  asm volatile(
      "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst),
      "r"(mma::smem_u32(src)), "r"(bytes)
      : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait_done() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}

// Fetches a map's descriptor ahead of its first use.
__device__ __forceinline__ void prefetch_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

}  // namespace tma
}  // namespace infllm::attention::cuda::sm90
