// CPU embedding gather and scatter-add. Indices are validated before any write.
#include "core/kernels/embedding.h"

#include <cstring>

#include "core/cpu/strided.h"

namespace infllm::cpu {
namespace {

void check_indices(const Tensor& index, int64_t vocab) {
  const int32_t* idx = index.data<int32_t>();
  for (int64_t i = 0; i < index.numel(); ++i) {
    INFLLM_CHECK(idx[i] >= 0 && idx[i] < vocab, "embedding: index ", idx[i], " at position ", i,
                 " is outside the vocabulary [0, ", vocab,
                 ") (check model.vocab_size against "
                 "the data file's vocab_size)");
  }
}

}  // namespace

void embedding_forward(const Tensor& table, const Tensor& index, Tensor& out) {
  int64_t vocab = table.size(0), width = table.size(1);
  check_indices(index, vocab);
  const int32_t* idx = index.data<int32_t>();
  size_t row_bytes = size_t(width) * dtype_size(table.dtype());
  const char* t = static_cast<const char*>(table.data_ptr());
  char* o = static_cast<char*>(out.data_ptr());
#pragma omp parallel for if (index.numel() > 256)
  for (int64_t i = 0; i < index.numel(); ++i) {
    std::memcpy(o + i * row_bytes, t + idx[i] * row_bytes, row_bytes);
  }
}

void embedding_backward(const Tensor& index, const Tensor& dout, Tensor& dtable) {
  int64_t vocab = dtable.size(0), width = dtable.size(1);
  check_indices(index, vocab);
  const int32_t* idx = index.data<int32_t>();
  visit_float(dtable.dtype(), "embedding_backward", [&]<class T>() {
    visit_float(dout.dtype(), "embedding_backward", [&]<class G>() {
      const G* g = dout.data<G>();
      T* d = dtable.data<T>();
      // Sequential over tokens (repeated indices collide); parallel over the width.
      for (int64_t i = 0; i < index.numel(); ++i) {
        T* row = d + int64_t(idx[i]) * width;
        const G* grow = g + i * width;
        for (int64_t c = 0; c < width; ++c) row[c] = store<T>(load(row[c]) + load(grow[c]));
      }
    });
  });
}

}  // namespace infllm::cpu
