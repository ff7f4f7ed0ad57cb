// CPU matmul: operands packed once per batch entry into panels in the accumulation type, then
// register-tiled. A [M, K] becomes bands of kTileRows rows stored k-major ([band][K][kTileRows],
// rows past M zero), B [K, N] becomes rows padded with zeros to a multiple of kTileCols. Every
// tile is then full: kTileRows x kTileCols accumulators stay in registers over the whole K, and
// each step reads kTileRows adjacent values of A and one contiguous row piece of B.
#include "core/kernels/matmul.h"

#include <algorithm>
#include <vector>

#include "core/cpu/strided.h"

namespace infllm::cpu {
namespace {

constexpr int64_t kTileRows = 4;
constexpr int64_t kTileCols = 16;  // two AVX2 vectors of f32: 8 accumulator registers per tile

int64_t round_up(int64_t x, int64_t to) {
  return (x + to - 1) / to * to;
}

// element (r, c) of the [rows, cols] matrix src, or of its transpose when `transposed`.
template <class T>
auto element(const T* src, int64_t rows, int64_t cols, bool transposed, int64_t r, int64_t c) {
  return load(transposed ? src[c * rows + r] : src[r * cols + c]);
}

// A [m, k] -> [ceil(m / kTileRows)][k][kTileRows].
template <class Acc, class T>
void pack_a(const T* src, int64_t m, int64_t k, bool transposed, Acc* dst) {
  for (int64_t r0 = 0; r0 < m; r0 += kTileRows)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t r = r0; r < r0 + kTileRows; ++r)
        *dst++ = r < m ? Acc(element(src, m, k, transposed, r, c)) : Acc(0);
}

// B [k, n] -> [k][round_up(n, kTileCols)].
template <class Acc, class T>
void pack_b(const T* src, int64_t k, int64_t n, bool transposed, Acc* dst) {
  const int64_t padded = round_up(n, kTileCols);
  for (int64_t r = 0; r < k; ++r)
    for (int64_t c = 0; c < padded; ++c)
      dst[r * padded + c] = c < n ? Acc(element(src, k, n, transposed, r, c)) : Acc(0);
}

// 32-byte vectors (GCC vector extensions): one AVX2 register, two SSE registers on baseline
// x86-64. Spelled out because GCC's auto-vectorizer picks the K loop here and shuffles.
// aligned(alignof(T)): loads and stores at any element address.
template <class T>
struct Vector {
  typedef T type __attribute__((vector_size(32), aligned(alignof(T))));
};

// One band of output rows: c[i0 .. i0 + kTileRows, :] (padded width) from its A panel. Compiled
// twice, for AVX2+FMA machines and for any x86-64; the loader picks at run time. (Below the
// OpenMP region on purpose: GCC outlines a parallel region into a function that is not cloned.)
template <class Acc>
__attribute__((target_clones("arch=x86-64-v3", "default"))) void gemm_band(
    int64_t padded_n, int64_t k, const Acc* a_panel, const Acc* b, Acc* c_band) {
  using V = typename Vector<Acc>::type;
  constexpr int64_t kLanes = sizeof(V) / sizeof(Acc);
  constexpr int64_t kVectors = kTileCols / kLanes;  // per tile row
  for (int64_t j0 = 0; j0 < padded_n; j0 += kTileCols) {
    V acc[kTileRows][kVectors] = {};
    for (int64_t kk = 0; kk < k; ++kk) {
      const V* b_row = reinterpret_cast<const V*>(b + kk * padded_n + j0);
      for (int64_t r = 0; r < kTileRows; ++r)
        for (int64_t v = 0; v < kVectors; ++v)
          acc[r][v] += a_panel[kk * kTileRows + r] * b_row[v];  // scalar broadcast
    }
    for (int64_t r = 0; r < kTileRows; ++r)
      for (int64_t v = 0; v < kVectors; ++v)
        reinterpret_cast<V*>(c_band + r * padded_n + j0)[v] = acc[r][v];
  }
}

// c [round_up(m, kTileRows), padded_n] = packed A @ packed B.
template <class Acc>
void gemm(int64_t m, int64_t padded_n, int64_t k, const Acc* a, const Acc* b, Acc* c) {
  const int64_t bands = round_up(m, kTileRows) / kTileRows;
#pragma omp parallel for schedule(static) if (m * padded_n * k > 32768)
  for (int64_t band = 0; band < bands; ++band)
    gemm_band(padded_n, k, a + band * k * kTileRows, b, c + band * kTileRows * padded_n);
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args) {
  int64_t batch = out.size(0), m = out.size(1), n = out.size(2);
  int64_t k = args.trans_a ? a.size(1) : a.size(2);
  visit_float(a.dtype(), "matmul", [&]<class T>() {
    using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const int64_t padded_n = round_up(n, kTileCols);
    std::vector<Acc> pa(round_up(m, kTileRows) * k), pb(k * padded_n);
    std::vector<Acc> pc(round_up(m, kTileRows) * padded_n);
    for (int64_t i = 0; i < batch; ++i) {
      const T* ai = a.data<T>() + (a.size(0) == 1 ? 0 : i) * m * k;
      const T* bi = b.data<T>() + (b.size(0) == 1 ? 0 : i) * k * n;
      // A stored [K, M] when trans_a: reading its transpose gives row-major [M, K].
      pack_a(ai, m, k, args.trans_a, pa.data());
      pack_b(bi, k, n, args.trans_b, pb.data());
      gemm(m, padded_n, k, pa.data(), pb.data(), pc.data());
      visit_float(out.dtype(), "matmul", [&]<class O>() {
        O* oi = out.data<O>() + i * m * n;
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) {
            Acc& value = pc[r * padded_n + c];
            O& dst = oi[r * n + c];
            Acc prior = args.beta == 0.0f ? Acc(0) : Acc(args.beta) * Acc(load(dst));
            dst = store<O>(Acc(args.alpha) * value + prior);
          }
      });
    }
  });
}

}  // namespace infllm::cpu
