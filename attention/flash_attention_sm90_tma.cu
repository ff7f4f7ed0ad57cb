// Host side of the TMA loads (flash_attention_sm90_tma.cuh): the tensor maps of a call's K and V
// (the forward's and dQ's rings) and of its Q and dO (the dK/dV pass's ring).
// cuTensorMapEncodeTiled is a driver API function; it is looked up through the runtime
// (cudaGetDriverEntryPointByVersion, the non-deprecated form of cudaGetDriverEntryPoint) so the
// library needs no -lcuda.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/flash_attention_sm90_tma.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda::sm90 {
namespace {

// The driver's encoder at its CUDA 12.0 ABI (the signature PFN_..._v12000 names).
PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || fn == nullptr)
      fail(
          "TMA copy (INFLLM_ATTENTION_COPY): the CUDA driver has no cuTensorMapEncodeTiled; "
          "INFLLM_ATTENTION_COPY=cp_async copies without the TMA");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// The view {D, heads, T, B} (innermost first; strides in bytes of dims 1 .. 3: a head, a token of
// token_heads heads, a sequence) of a [B, T, token_heads, D] bf16 tensor, box {64, 1, rows, 1}:
// one 128B-swizzled [rows][64] panel of one head's rows. The TMA requires a 16-byte aligned base
// and strides that are multiples of 16 bytes (D * 2 = 128 or 256 is), the box's inner extent a
// multiple of 16 bytes and, with the 128-byte swizzle, at most 128 (64 bf16: exactly 128), and
// every box extent at most 256 (rows = 64 or 128). The B dimension keeps a tile that runs past
// T from reading the next sequence: those rows are out of bounds and zero-filled
// (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE fills zeros; the NaN request would fill NaNs).
CUtensorMap rows_map(int D, int rows, const bf16* base, int heads, int token_heads,
                     const Problem& p, const char* name) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0)
    fail("TMA copy (INFLLM_ATTENTION_COPY): ", name,
         " is not 16-byte aligned; INFLLM_ATTENTION_COPY=cp_async copies it without the TMA");
  constexpr cuuint64_t kElement = sizeof(bf16);
  const cuuint64_t dims[4] = {cuuint64_t(D), cuuint64_t(heads), cuuint64_t(p.T), cuuint64_t(p.B)};
  const cuuint64_t token = cuuint64_t(token_heads) * D * kElement;
  const cuuint64_t strides[3] = {D * kElement, token, token * cuuint64_t(p.T)};
  const cuuint32_t box[4] = {64, 1, cuuint32_t(rows), 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult result = encode_tiled()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<bf16*>(base), dims, strides, box,
      element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS)
    fail("TMA copy (INFLLM_ATTENTION_COPY): cuTensorMapEncodeTiled rejected the ", name,
         " view (CUresult ", int(result), ") at D=", D, " T=", p.T, " heads=", heads,
         " heads per token=", token_heads, " B=", p.B,
         "; INFLLM_ATTENTION_COPY=cp_async copies without the TMA");
  return map;
}

}  // namespace

KvMaps make_kv_maps(int D, int kKeys, const bf16* k, const bf16* v, const Problem& p) {
  return {rows_map(D, kKeys, k, p.Hkv, p.kv_heads, p, "K"),
          rows_map(D, kKeys, v, p.Hkv, p.kv_heads, p, "V")};
}

QueryMaps make_query_maps(int D, int kQueries, const bf16* q, const bf16* dout, const Problem& p) {
  return {rows_map(D, kQueries, q, p.Hq, p.q_heads, p, "Q"),
          rows_map(D, kQueries, dout, p.Hq, p.o_heads, p, "dO")};
}

}  // namespace infllm::attention::cuda::sm90
