// Warp-level building blocks of the attention kernels: bf16 tensor-core MMA (m16n8k16, f32
// accumulate), ldmatrix fragment loads, cp.async copies and the swizzled shared-memory tile
// layout. All of it is sm_80 PTX, so the same code runs as sm_90a machine code and as compute_80
// PTX.
//
// Fragment layouts of mma.m16n8k16 (lane = threadIdx.x % 32, r = lane / 4, c = (lane % 4) * 2):
//   A 16x16 (4 regs of bf16x2): a0 = A[r][c..c+1], a1 = A[r+8][c..], a2 = A[r][c+8..], a3 =
//   A[r+8][c+8..] B 16x8  (2 regs):           b0 = B[c..c+1][r], b1 = B[c+8..c+9][r] C 16x8  (4
//   f32):            c0,c1 = C[r][c..c+1], c2,c3 = C[r+8][c..c+1]
// The C layout of two adjacent n-tiles is exactly the A layout of one k16 step, so
// probabilities computed in registers feed the next MMA without touching shared memory.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace infllm::attention::mma {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// The same swizzle in column panels of [kRows][64] (128-byte lines): the hardware's 128B
// swizzle, the layout warpgroup MMAs read (wgmma.cuh).
template <int kRows>
__device__ __forceinline__ int panel_swizzled(int row, int col) {
  return (col >> 6) * (kRows * 64) + row * 64 + ((((col >> 3) & 7) ^ (row & 7)) << 3) + (col & 7);
}

// A [rows x D] bf16 tile in shared memory, 16-byte chunks swizzled by XOR with the row's low 3
// bits: the 8 rows that one ldmatrix reads (same logical chunk) land in 8 different bank groups,
// and cp.async writes stay 16-byte aligned. kPanelRows > 0: panel_swizzled<kPanelRows> instead
// (identical when D = 64).
template <int D, int kPanelRows = 0>
__device__ __forceinline__ int swizzled(int row, int col) {
  if constexpr (kPanelRows > 0) return panel_swizzled<kPanelRows>(row, col);
  return row * D + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

// Copies 16 bytes global -> shared without passing through registers; when `valid` is false the
// destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
// The 4-byte version (lse and delta values).
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// mbarrier-tracked cp.async: a warp's copies complete a barrier phase when they land, so other
// warps can wait for exactly the data they need instead of meeting at __syncthreads.
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
// Arrives on `bar` once every cp.async this thread issued so far has landed.
__device__ __forceinline__ void cp_async_arrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(smem_u32(bar)));
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile(
      "{\n .reg .b64 state;\n mbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"(smem_u32(bar))
      : "memory");
}
// Waits until the phase of `bar` with this parity has completed. On sm_90 try_wait suspends the
// warp in hardware for a while instead of spinning, leaving issue slots to the warps that compute.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, int parity) {
  uint32_t done = 0;
  while (!done) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
#else
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
#endif
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the special-function unit (MUFU.EX2): one instruction, where exp2f adds range handling.
// Results below 2^-126 flush to 0, which no probability or rescale factor here notices.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 2^x for x <= 0 on the FMA pipe instead of the special-function unit, which does 16
// exponentials per SM and cycle against the FMA pipe's 128 operations: x = n + f with n the
// nearest integer (added to the magic 1.5 x 2^23, n lands in the low mantissa bits) and f in
// [-0.5, 0.5]; 2^f from a degree-3 polynomial with p(0) = 1 (minimax relative error 1.0e-4, 20 x
// below bf16's rounding of a probability); n added to the exponent bits. x is clamped to -127,
// where the result is exactly 0 (p(0) = 1, exponent field 127 - 127), so a masked -inf score gives
// 0 as fast_exp2 does. 9 instructions against fast_exp2's one: a softmax moves only a share of
// its exponentials here (tile_probabilities).
__device__ __forceinline__ float exp2_on_fma(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 x 2^23
  x = fmaxf(x, -127.f);
  const float t = __fadd_rn(x, kRound);                // n + kRound, exactly
  const float f = __fsub_rn(x, __fsub_rn(t, kRound));  // never contracted or reassociated
  const float p = fmaf(fmaf(fmaf(0.0550086908f, f, 0.242210627f), f, 0.693282902f), f, 1.f);
  // The low bits of t hold n (two's complement): t's bits << 23 are n << 23.
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// A-operand fragment of rows [row0, row0+16) x cols [col0, col0+16) of a row-major tile.
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const __nv_bfloat16* tile, int row0,
                                       int col0, int lane) {
  ldmatrix_x4(a, smem_u32(tile + swizzled<D>(row0 + (lane & 15), col0 + (lane >> 4) * 8)));
}

// B operand for X @ Y^T where Y is a row-major [n][k] tile (keys as n, head dim as k): two
// n-tiles (rows n0..n0+15) of one k16 step. b[0],b[1] = n-tile n0; b[2],b[3] = n-tile n0+8.
template <int D, int kPanelRows = 0>
__device__ __forceinline__ void load_b_rows(uint32_t (&b)[4], const __nv_bfloat16* tile, int n0,
                                            int k0, int lane) {
  ldmatrix_x4(b, smem_u32(tile + swizzled<D, kPanelRows>(n0 + (lane & 7) + (lane >> 4) * 8,
                                                         k0 + ((lane >> 3) & 1) * 8)));
}

// B operand for X @ Y where Y is a row-major [k][n] tile (keys as k, head dim as n): one k16
// step (rows k0..k0+15) of two n-tiles. b[0],b[1] = cols n0..n0+7; b[2],b[3] = cols n0+8..n0+15.
template <int D, int kPanelRows = 0>
__device__ __forceinline__ void load_b_cols(uint32_t (&b)[4], const __nv_bfloat16* tile, int k0,
                                            int n0, int lane) {
  ldmatrix_x4_trans(b,
                    smem_u32(tile + swizzled<D, kPanelRows>(k0 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                                            n0 + (lane >> 4) * 8)));
}

// C (two adjacent n-tiles of 8 columns) -> A fragment of one k16 step, rounded to bf16.
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4],
                                       const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

}  // namespace infllm::attention::mma
