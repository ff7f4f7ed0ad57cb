// CPU matmul: operands packed once into row-major A [M, K] and B [K, N] in the accumulation
// type, then register-tiled: threads split the output rows in bands of 4; each 4 x 16 tile of C
// accumulates in registers over the whole K, reading contiguous rows of B (vectorized).
#include "core/kernels/matmul.h"

#include <algorithm>
#include <vector>

#include "core/cpu/strided.h"

namespace infllm::cpu {
namespace {

// Register tile: kTileRows x kTileCols accumulators stay in registers across the whole K loop,
// so each multiply-add loads one element of B (a row of the tile) and broadcasts one of A.
constexpr int64_t kTileRows = 4;
constexpr int64_t kTileCols = 16;

// Copies a [rows, cols] matrix (or its transpose, if `transposed`) into dst as row-major Acc.
template <class Acc, class T>
void pack(const T* src, int64_t rows, int64_t cols, bool transposed, Acc* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      dst[r * cols + c] = Acc(load(transposed ? src[c * rows + r] : src[r * cols + c]));
    }
  }
}

// c[i0.., j0..] = a[i0.., :] @ b[:, j0..] for one tile; rows/cols may be short at the edges.
template <class Acc>
void gemm_tile(int64_t n, int64_t k, const Acc* a, const Acc* b, Acc* c, int64_t i0, int64_t j0,
               int64_t rows, int64_t cols) {
  Acc acc[kTileRows][kTileCols] = {};
  if (cols == kTileCols) {
    for (int64_t kk = 0; kk < k; ++kk) {
      const Acc* brow = b + kk * n + j0;
      for (int64_t r = 0; r < kTileRows; ++r) {
        Acc av = r < rows ? a[(i0 + r) * k + kk] : Acc(0);
        for (int64_t j = 0; j < kTileCols; ++j) acc[r][j] += av * brow[j];
      }
    }
  } else {
    for (int64_t kk = 0; kk < k; ++kk) {
      const Acc* brow = b + kk * n + j0;
      for (int64_t r = 0; r < rows; ++r) {
        Acc av = a[(i0 + r) * k + kk];
        for (int64_t j = 0; j < cols; ++j) acc[r][j] += av * brow[j];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) c[(i0 + r) * n + j0 + j] = acc[r][j];
  }
}

// Compiled twice: for AVX2+FMA machines and for any x86-64; the loader picks at run time.
template <class Acc>
__attribute__((target_clones("arch=x86-64-v3", "default"))) void gemm(int64_t m, int64_t n,
                                                                      int64_t k, const Acc* a,
                                                                      const Acc* b, Acc* c) {
  int64_t bands = (m + kTileRows - 1) / kTileRows;
#pragma omp parallel for schedule(static) if (m * n * k > 32768)
  for (int64_t band = 0; band < bands; ++band) {
    int64_t i0 = band * kTileRows, rows = std::min(kTileRows, m - i0);
    for (int64_t j0 = 0; j0 < n; j0 += kTileCols) {
      gemm_tile(n, k, a, b, c, i0, j0, rows, std::min(kTileCols, n - j0));
    }
  }
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args) {
  int64_t batch = out.size(0), m = out.size(1), n = out.size(2);
  int64_t k = args.trans_a ? a.size(1) : a.size(2);
  visit_float(a.dtype(), "matmul", [&]<class T>() {
    using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
    std::vector<Acc> pa(m * k), pb(k * n), pc(m * n);
    for (int64_t i = 0; i < batch; ++i) {
      const T* ai = a.data<T>() + (a.size(0) == 1 ? 0 : i) * m * k;
      const T* bi = b.data<T>() + (b.size(0) == 1 ? 0 : i) * k * n;
      // A stored [K, M] when trans_a: reading its transpose gives row-major [M, K].
      pack(ai, m, k, args.trans_a, pa.data());
      pack(bi, k, n, args.trans_b, pb.data());
      gemm(m, n, k, pa.data(), pb.data(), pc.data());
      visit_float(out.dtype(), "matmul", [&]<class O>() {
        O* oi = out.data<O>() + i * m * n;
        for (int64_t e = 0; e < m * n; ++e) {
          Acc prior = args.beta == 0.0f ? Acc(0) : Acc(args.beta) * Acc(load(oi[e]));
          oi[e] = store<O>(Acc(args.alpha) * pc[e] + prior);
        }
      });
    }
  });
}

}  // namespace infllm::cpu
