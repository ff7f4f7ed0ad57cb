// Hopper warpgroup MMA (wgmma, sm_90a only): the 4 warps of a warpgroup (128 threads) multiply a
// 64-row A by a B of 64 or 128 columns, 16 deep, asynchronously; the tensor cores read B (and A,
// when it is not in registers) straight from shared memory through a 64-bit descriptor. Every
// function here must be called by all 128 threads of the warpgroup with uniform arguments. Callers
// compile them only under __CUDA_ARCH_FEAT_SM90_ALL.
//
// Shared tiles are [kRows][C] bf16, C = 64 or 128, stored as C/64 column panels of [kRows][64]:
// one 128-byte line per row, its 16-byte chunks XOR-swizzled by (row % 8) - the hardware's 128B
// swizzle, so every panel starts at a 1024-byte boundary. One tile serves as
//   K-major operand: tile rows = the M (or N) dimension, columns = K  (Q, dO, K as in Q K^T)
//   MN-major operand: tile rows = K, columns = M or N                (V in P V, K, dS^T in dS K)
// so the same K/V/Q/dO copy feeds every product of the forward and backward.
//
// Accumulators (f32, N/2 registers per thread for m64nN): warp w of the group holds rows
// 16w .. 16w+15; register 4c + e is row 16w + lane/4 + 8 (e / 2), column 8c + 2 (lane % 4) + e % 2:
// the mma.m16n8k16 C layout repeated over N/8 column chunks. A from registers takes the m16n8k16 A
// layout, so column chunks 2j and 2j+1 of an accumulator are the A fragment of k-step j.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "attention/flash_attention_mma.cuh"

namespace infllm::attention::wgmma {

using mma::smem_u32;

// Element offset of (row, col) in a swizzled [kRows][C] tile.
template <int kRows>
__device__ __forceinline__ int tile_offset(int row, int col) {
  return mma::panel_swizzled<kRows>(row, col);
}

// Descriptor of an operand that starts at (row, col) of a tile. Fields: start address (16-byte
// units), leading byte offset, stride byte offset = 1024 (the next 8 rows), layout 1 = 128B
// swizzle. Shared memory lies below 256 KB and operands start at 16-byte multiples, so the start
// is the tile's units plus the offset's: the tile's part is computed once for all its operands
// (a K loop's descriptors differ by constants).
template <int kRows>
__device__ __forceinline__ uint64_t descriptor(const __nv_bfloat16* tile, int row, int col,
                                               uint32_t leading_bytes) {
  const uint32_t tile_units = (smem_u32(tile) & 0x3FFFF) >> 4;
  const uint32_t offset_units = uint32_t((col >> 6) * (kRows * 64) + row * 64 + (col & 63)) >> 3;
  return uint64_t(tile_units + offset_units) | (uint64_t(leading_bytes >> 4) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
// K-major operand: tile rows are M (or N), 16 columns of K from col (a multiple of 16: the offset
// inside the 128-byte line, which the hardware swizzles from the address); row a multiple of 8.
// The leading offset is unused by this layout (16 bytes by convention).
template <int kRows>
__device__ __forceinline__ uint64_t k_major(const __nv_bfloat16* tile, int row, int col) {
  return descriptor<kRows>(tile, row, col, 16);
}
// MN-major operand: 16 tile rows of K from row, N = 64 or 128 columns from col (a multiple of
// 64); the leading offset steps to the next panel of 64 columns.
template <int kRows>
__device__ __forceinline__ uint64_t mn_major(const __nv_bfloat16* tile, int row, int col) {
  return descriptor<kRows>(tile, row, col, kRows * 128);
}

// Orders this thread's earlier generic-proxy shared-memory writes (cp.async, st.shared) before
// later async-proxy reads (wgmma operands). Writers fence, then meet the readers at a barrier.
__device__ __forceinline__ void fence_async_proxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Before the first wgmma that reads registers written by ordinary instructions (accumulators,
// A fragments).
__device__ __forceinline__ void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most N committed groups are still running.
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins registers that an in-flight wgmma reads or writes: the compiler may neither move their
// uses across this point nor reuse them before it.
template <int N>
__device__ __forceinline__ void hold(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void hold(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// The accumulator operand lists of m64n64 (32 registers) and m64n128 (64 registers).
#define INFLLM_WGMMA_D32(d, o)                                                                    \
  "+f"(d[o + 0]), "+f"(d[o + 1]), "+f"(d[o + 2]), "+f"(d[o + 3]), "+f"(d[o + 4]), "+f"(d[o + 5]), \
      "+f"(d[o + 6]), "+f"(d[o + 7]), "+f"(d[o + 8]), "+f"(d[o + 9]), "+f"(d[o + 10]),            \
      "+f"(d[o + 11]), "+f"(d[o + 12]), "+f"(d[o + 13]), "+f"(d[o + 14]), "+f"(d[o + 15]),        \
      "+f"(d[o + 16]), "+f"(d[o + 17]), "+f"(d[o + 18]), "+f"(d[o + 19]), "+f"(d[o + 20]),        \
      "+f"(d[o + 21]), "+f"(d[o + 22]), "+f"(d[o + 23]), "+f"(d[o + 24]), "+f"(d[o + 25]),        \
      "+f"(d[o + 26]), "+f"(d[o + 27]), "+f"(d[o + 28]), "+f"(d[o + 29]), "+f"(d[o + 30]),        \
      "+f"(d[o + 31])
#define INFLLM_WGMMA_NAMES32                                                               \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define INFLLM_WGMMA_NAMES64                                                               \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "  \
  "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "  \
  "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d[64 x N] += A[64 x 16] B[16 x N], N = 64 or 128 (N / 2 accumulator registers). A in shared
// memory, K-major (kTransA = 0) or MN-major (kTransA = 1: a tile whose rows are K, like B's);
// B K-major (kTransB = 0) or MN-major (kTransB = 1).
template <int kTransB, int N, int kTransA = 0>
__device__ __forceinline__ void mma(float (&d)[N / 2], uint64_t a, uint64_t b) {
  static_assert(N == 64 || N == 128);
  if constexpr (N == 64)
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " INFLLM_WGMMA_NAMES32
                 ", %32, %33, 1, 1, 1, %34, %35;\n"
                 : INFLLM_WGMMA_D32(d, 0)
                 : "l"(a), "l"(b), "n"(kTransA), "n"(kTransB));
  else
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " INFLLM_WGMMA_NAMES64
                 ", %64, %65, 1, 1, 1, %66, %67;\n"
                 : INFLLM_WGMMA_D32(d, 0), INFLLM_WGMMA_D32(d, 32)
                 : "l"(a), "l"(b), "n"(kTransA), "n"(kTransB));
}

// The same with A from registers (the m16n8k16 A fragment of the thread's rows).
template <int kTransB, int N>
__device__ __forceinline__ void mma(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b) {
  static_assert(N == 64 || N == 128);
  if constexpr (N == 64)
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " INFLLM_WGMMA_NAMES32
                 ", {%32, %33, %34, %35}, %36, 1, 1, 1, %37;\n"
                 : INFLLM_WGMMA_D32(d, 0)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(kTransB));
  else
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " INFLLM_WGMMA_NAMES64
                 ", {%64, %65, %66, %67}, %68, 1, 1, 1, %69;\n"
                 : INFLLM_WGMMA_D32(d, 0), INFLLM_WGMMA_D32(d, 32)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(kTransB));
}

#undef INFLLM_WGMMA_D32
#undef INFLLM_WGMMA_NAMES32
#undef INFLLM_WGMMA_NAMES64

// Column chunks 2j, 2j+1 of an accumulator -> the A fragment of k-step j, rounded to bf16.
template <int R>
__device__ __forceinline__ void accumulator_to_a(uint32_t (&a)[4], const float (&d)[R], int j) {
  a[0] = mma::pack_bf16(d[8 * j + 0], d[8 * j + 1]);
  a[1] = mma::pack_bf16(d[8 * j + 2], d[8 * j + 3]);
  a[2] = mma::pack_bf16(d[8 * j + 4], d[8 * j + 5]);
  a[3] = mma::pack_bf16(d[8 * j + 6], d[8 * j + 7]);
}

// acc[64 x N] += A B with A = kSteps A fragments in registers (P or dS) and B = rows 0 .. 16
// kSteps of an MN-major [kTileRows][N] tile (V, K, Q or dO). issue_registers_times_tile only
// issues the MMAs (the caller fences before and commits after); registers_times_tile also waits
// for them and pins the registers on both sides.
template <int N, int kTileRows, int kSteps>
__device__ __forceinline__ void issue_registers_times_tile(float (&acc)[N / 2],
                                                           const uint32_t (&a)[kSteps][4],
                                                           const __nv_bfloat16* tile) {
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) mma<1, N>(acc, a[ks], mn_major<kTileRows>(tile, ks * 16, 0));
}
template <int N, int kTileRows, int kSteps>
__device__ __forceinline__ void registers_times_tile(float (&acc)[N / 2], uint32_t (&a)[kSteps][4],
                                                     const __nv_bfloat16* tile) {
  fence();
  issue_registers_times_tile<N, kTileRows, kSteps>(acc, a, tile);
  commit();
  wait<0>();
  hold(acc);
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) hold(a[ks]);
}

}  // namespace infllm::attention::wgmma
