// CPU matmul: operands packed once into row-major A [M, K] and B [K, N] in the accumulation
// type, then a cache-blocked loop. Each thread owns a band of output rows, walks B in
// (k, j) blocks that stay in L2, and the innermost j loop is contiguous so it vectorizes.
#include "core/kernels/matmul.h"

#include <algorithm>
#include <vector>

#include "core/cpu/strided.h"

namespace infllm::cpu {
namespace {

constexpr int64_t kRowBand = 16;
constexpr int64_t kBlockK = 128;
constexpr int64_t kBlockN = 512;

// Copies a [rows, cols] matrix (or its transpose, if `transposed`) into dst as row-major Acc.
template <class Acc, class T>
void pack(const T* src, int64_t rows, int64_t cols, bool transposed, Acc* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      dst[r * cols + c] = Acc(load(transposed ? src[c * rows + r] : src[r * cols + c]));
    }
  }
}

template <class Acc>
void gemm(int64_t m, int64_t n, int64_t k, const Acc* a, const Acc* b, Acc* c) {
#pragma omp parallel for schedule(dynamic) if (m * n * k > 32768)
  for (int64_t band = 0; band < m; band += kRowBand) {
    int64_t band_end = std::min(m, band + kRowBand);
    std::fill(c + band * n, c + band_end * n, Acc(0));
    for (int64_t j0 = 0; j0 < n; j0 += kBlockN) {
      int64_t j1 = std::min(n, j0 + kBlockN);
      for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
        int64_t k1 = std::min(k, k0 + kBlockK);
        for (int64_t i = band; i < band_end; ++i) {
          Acc* crow = c + i * n;
          for (int64_t kk = k0; kk < k1; ++kk) {
            Acc av = a[i * k + kk];
            const Acc* brow = b + kk * n;
            for (int64_t j = j0; j < j1; ++j) crow[j] += av * brow[j];
          }
        }
      }
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
