// CUDA embedding gather and its deterministic scatter-add backward. table [V, C], index i32 [N],
// out / dout [N, C]. An index outside [0, V) is caught on the device: the kernel keeps the first
// bad position in a flag word that the host reads back after the launch.
//
// Backward without atomics: sorting keys (index << position_bits | position) groups the tokens
// of each vocabulary row with their positions ascending; the first token of a group sums the
// group's dout rows in that order (f32) and adds the sum to its dtable row once. The result is
// the same on every run, and a bf16 dtable is rounded once per step, not once per token.
#include <cub/device/device_radix_sort.cuh>

#include "core/cuda/launch.cuh"
#include "core/kernels/embedding.h"

namespace infllm::cuda {
namespace {

// The flag word is (position << 32 | uint32 value), all ones when every index is valid, so
// atomicMin keeps the first bad position.
__device__ __forceinline__ void report_bad_index(unsigned long long* flag, int64_t position,
                                                 int32_t value) {
  atomicMin(flag, (static_cast<unsigned long long>(position) << 32) | uint32_t(value));
}

Tensor make_flag(const Tensor& like, cudaStream_t stream) {
  Tensor flag = Tensor::empty({1}, DType::i64, like.device());
  CUDA_CHECK(cudaMemsetAsync(flag.data_ptr(), 0xff, sizeof(uint64_t), stream));
  return flag;
}

// Waits for the stream and throws if a kernel reported a bad index.
void throw_if_bad_index(const Tensor& flag, int64_t vocab, cudaStream_t stream) {
  uint64_t word = 0;
  CUDA_CHECK(cudaMemcpyAsync(&word, flag.data_ptr(), sizeof(word), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (word == ~uint64_t(0)) return;
  fail("embedding: index ", int32_t(uint32_t(word)), " at position ", int64_t(word >> 32),
       " is outside the vocabulary [0, ", vocab,
       ") (check model.vocab_size against the data file's vocab_size)");
}

// out row n = table row index[n], copied in `Unit`s (16 bytes when rows and pointers allow).
template <class Unit>
__global__ void embedding_forward_kernel(const Unit* table, const int32_t* index, Unit* out,
                                         int64_t count, int64_t units_per_row, int32_t vocab,
                                         unsigned long long* flag) {
  int64_t total = count * units_per_row;
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += stride) {
    int64_t n = e / units_per_row, u = e % units_per_row;
    int32_t v = index[n];
    if (v < 0 || v >= vocab) {
      if (u == 0) report_bad_index(flag, n, v);
      continue;
    }
    out[e] = table[int64_t(v) * units_per_row + u];
  }
}

__global__ void make_keys_kernel(const int32_t* index, uint64_t* keys, int64_t count,
                                 int position_bits, int32_t vocab, unsigned long long* flag) {
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < count; n += stride) {
    int32_t v = index[n];
    if (v < 0 || v >= vocab) report_bad_index(flag, n, v);
    keys[n] = (uint64_t(uint32_t(v)) << position_bits) | uint64_t(n);
  }
}

// Block `start` of the sorted keys does the work only if it begins a group of equal indices.
template <class T, class G>
__global__ void embedding_backward_kernel(const uint64_t* keys, const G* dout, T* dtable,
                                          int64_t count, int64_t width, int position_bits) {
  int64_t start = blockIdx.x;
  uint64_t row = keys[start] >> position_bits;
  if (start > 0 && (keys[start - 1] >> position_bits) == row) return;
  uint64_t position_mask = (uint64_t(1) << position_bits) - 1;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = start; j < count && (keys[j] >> position_bits) == row; ++j) {
      acc += to_float(dout[int64_t(keys[j] & position_mask) * width + c]);
    }
    T* d = dtable + int64_t(row) * width + c;
    *d = from_float<T>(to_float(*d) + acc);
  }
}

int bit_width(uint64_t x) {
  return x == 0 ? 0 : 64 - __builtin_clzll(x);
}

void check_index(const Tensor& index, const Tensor& table_like, const char* op) {
  INFLLM_CHECK(
      index.dtype() == DType::i32 && index.is_contiguous() && index.device() == table_like.device(),
      op, " on CUDA: expected a contiguous i32 index on ", table_like.device().str(), ", got ",
      index.str());
  INFLLM_CHECK(index.numel() < (int64_t(1) << 31), op, " on CUDA: ", index.numel(),
               " indices exceed the 2^31 limit");
  INFLLM_CHECK(table_like.size(0) < (int64_t(1) << 31), op, " on CUDA: vocabulary ",
               table_like.size(0), " exceeds the 2^31 limit");
}

}  // namespace

void embedding_forward(const Tensor& table, const Tensor& index, Tensor& out) {
  check_index(index, table, "embedding_forward");
  int64_t vocab = table.size(0), width = table.size(1), count = index.numel();
  INFLLM_CHECK(table.is_contiguous() && out.is_contiguous() && table.dtype() == out.dtype() &&
                   out.numel() == count * width,
               "embedding_forward on CUDA: expected contiguous table [V, C] and out [N, C] of one "
               "dtype, got table ",
               table.str(), ", out ", out.str(), " for ", count, " indices");
  if (count * width == 0) return;
  DeviceScope scope(table.device());
  Tensor flag = make_flag(table, scope.stream());
  size_t row_bytes = size_t(width) * dtype_size(table.dtype());
  auto launch = [&]<class Unit>() {
    int64_t units = int64_t(row_bytes / sizeof(Unit));
    embedding_forward_kernel<Unit><<<grid_for(count * units), kThreads, 0, scope.stream()>>>(
        static_cast<const Unit*>(table.data_ptr()), static_cast<const int32_t*>(index.data_ptr()),
        static_cast<Unit*>(out.data_ptr()), count, units, int32_t(vocab),
        static_cast<unsigned long long*>(flag.data_ptr()));
    CUDA_CHECK_LAUNCH();
  };
  bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(table.data_ptr()) % 16 == 0 &&
              reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
  if (wide) {
    launch.template operator()<uint4>();
  } else if (dtype_size(table.dtype()) == 2) {
    launch.template operator()<uint16_t>();
  } else if (dtype_size(table.dtype()) == 4) {
    launch.template operator()<uint32_t>();
  } else {
    launch.template operator()<uint64_t>();
  }
  throw_if_bad_index(flag, vocab, scope.stream());
}

void embedding_backward(const Tensor& index, const Tensor& dout, Tensor& dtable) {
  check_index(index, dtable, "embedding_backward");
  int64_t vocab = dtable.size(0), width = dtable.size(1), count = index.numel();
  INFLLM_CHECK(dtable.is_contiguous() && dout.is_contiguous() && dout.numel() == count * width &&
                   dout.device() == dtable.device(),
               "embedding_backward on CUDA: expected contiguous dout [N, C] and dtable [V, C], "
               "got dout ",
               dout.str(), ", dtable ", dtable.str(), " for ", count, " indices");
  if (count * width == 0) return;
  DeviceScope scope(dtable.device());
  cudaStream_t stream = scope.stream();
  Tensor flag = make_flag(dtable, stream);
  int position_bits = bit_width(uint64_t(count - 1));
  int end_bit = position_bits + bit_width(uint64_t(vocab - 1));
  Tensor keys = Tensor::empty({count}, DType::i64, dtable.device());
  Tensor sorted = Tensor::empty({count}, DType::i64, dtable.device());
  auto* keys_in = static_cast<uint64_t*>(keys.data_ptr());
  auto* keys_out = static_cast<uint64_t*>(sorted.data_ptr());
  make_keys_kernel<<<grid_for(count), kThreads, 0, stream>>>(
      static_cast<const int32_t*>(index.data_ptr()), keys_in, count, position_bits, int32_t(vocab),
      static_cast<unsigned long long*>(flag.data_ptr()));
  CUDA_CHECK_LAUNCH();
  throw_if_bad_index(flag, vocab, stream);  // before any write to dtable

  // Keys are made in position order and the sort is stable: sorting the index bits alone keeps
  // the positions of one index ascending (a one-entry table has no index bits: sort positions).
  int begin_bit = end_bit > position_bits ? position_bits : 0;
  size_t scratch_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, scratch_bytes, keys_in, keys_out, int(count),
                                            begin_bit, end_bit, stream));
  Tensor scratch = Tensor::empty({int64_t(scratch_bytes / 8 + 1)}, DType::i64, dtable.device());
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(scratch.data_ptr(), scratch_bytes, keys_in, keys_out,
                                            int(count), begin_bit, end_bit, stream));
  visit_cuda_float(dtable.dtype(), "embedding_backward", [&]<class T>() {
    visit_cuda_float(dout.dtype(), "embedding_backward", [&]<class G>() {
      int threads = int(std::min<int64_t>(256, (width + 31) / 32 * 32));
      embedding_backward_kernel<T, G><<<unsigned(count), threads, 0, stream>>>(
          keys_out, static_cast<const G*>(dout.data_ptr()), static_cast<T*>(dtable.data_ptr()),
          count, width, position_bits);
      CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace infllm::cuda
