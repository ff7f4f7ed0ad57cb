// CUDA matmul through cuBLASLt: bf16 or f32 operands, f32 accumulation (CUBLAS_COMPUTE_32F: no
// TF32), bf16 or f32 output. cuBLASLt is column-major; a row-major [R, C] matrix is the same
// memory as a column-major [C, R] one, i.e. its transpose. So row-major out = a @ b is computed
// as column-major out^T = b^T @ a^T: b goes in cuBLAS's A slot and a in its B slot, each with
// the caller's transpose flag, and no data moves.
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "core/cuda/allocator.h"
#include "core/cuda/launch.cuh"
#include "core/kernels/matmul.h"

namespace infllm::cuda {
namespace {

#define CUBLAS_CHECK(call)                                                                    \
  do {                                                                                        \
    cublasStatus_t status_ = (call);                                                          \
    if (status_ != CUBLAS_STATUS_SUCCESS) {                                                   \
      ::infllm::fail("cuBLASLt error ", cublasLtGetStatusName(status_), " (",                 \
                     cublasLtGetStatusString(status_), ") in ", #call, " at ", __FILE__, ":", \
                     __LINE__);                                                               \
    }                                                                                         \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// One cuBLASLt handle and workspace per GPU, made on first use and kept for the process.
struct DeviceContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

DeviceContext& device_context(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceContext> contexts;
  std::lock_guard<std::mutex> lock(mutex);
  DeviceContext& context = contexts[device];
  if (!context.handle) {
    CUBLAS_CHECK(cublasLtCreate(&context.handle));
    context.workspace = device_alloc(kWorkspaceBytes, device);
  }
  return context;
}

// Everything the algorithm choice depends on. Alignments matter because the heuristic may pick
// kernels that need 16-byte (or wider) aligned operands.
struct PlanKey {
  int device;
  DType in_dtype, out_dtype;
  bool trans_a, trans_b, broadcast_a, broadcast_b;
  int64_t batch, m, n, k;
  unsigned align_a, align_b, align_out;

  auto tie() const {
    return std::tie(device, in_dtype, out_dtype, trans_a, trans_b, broadcast_a, broadcast_b, batch,
                    m, n, k, align_a, align_b, align_out);
  }
  bool operator<(const PlanKey& other) const { return tie() < other.tie(); }
};

// Descriptors and the chosen algorithm for one PlanKey; lives as long as the process.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_out = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

cudaDataType_t cuda_type(DType dtype) {
  return dtype == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F;
}

// Column-major layout of a row-major [batch, rows, cols] operand: cols x rows, leading dim cols.
// A broadcast operand (batch 1 shared by all) has batch stride 0.
cublasLtMatrixLayout_t make_layout(DType dtype, int64_t rows, int64_t cols, int64_t batch,
                                   bool broadcast) {
  cublasLtMatrixLayout_t layout;
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&layout, cuda_type(dtype), uint64_t(cols), uint64_t(rows), cols));
  int32_t count = int32_t(batch);
  int64_t stride = broadcast ? 0 : rows * cols;
  CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                sizeof(count)));
  CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                &stride, sizeof(stride)));
  return layout;
}

std::string describe(const PlanKey& key) {
  std::ostringstream out;
  out << "batch " << key.batch << ", M " << key.m << ", N " << key.n << ", K " << key.k << ", "
      << dtype_name(key.in_dtype) << " -> " << dtype_name(key.out_dtype)
      << (key.trans_a ? ", trans_a" : "") << (key.trans_b ? ", trans_b" : "");
  return out.str();
}

Plan make_plan(const PlanKey& key, cublasLtHandle_t handle) {
  Plan plan;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLAS's A is our b, its B is our a (see the top of the file).
  cublasOperation_t op_first = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_second = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                              sizeof(op_first)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                              sizeof(op_second)));
  // Stored row-major shapes: a [M, K] or [K, M]; b [K, N] or [N, K]; out [M, N].
  plan.layout_a = key.trans_a ? make_layout(key.in_dtype, key.k, key.m, key.batch, key.broadcast_a)
                              : make_layout(key.in_dtype, key.m, key.k, key.batch, key.broadcast_a);
  plan.layout_b = key.trans_b ? make_layout(key.in_dtype, key.n, key.k, key.batch, key.broadcast_b)
                              : make_layout(key.in_dtype, key.k, key.n, key.batch, key.broadcast_b);
  plan.layout_out = make_layout(key.out_dtype, key.m, key.n, key.batch, false);

  cublasLtMatmulPreference_t preference;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  uint64_t workspace = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, unsigned> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_out},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_out}};
  for (const auto& [attribute, bytes] : alignments) {
    uint32_t value = bytes;
    CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle, plan.desc, plan.layout_b, plan.layout_a, plan.layout_out, plan.layout_out, preference,
      1, &result, &found);
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
  INFLLM_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0,
               "matmul on CUDA: cuBLASLt has no algorithm for ", describe(key), " (",
               cublasLtGetStatusString(status), ")");
  plan.algo = result.algo;
  return plan;
}

const Plan& find_plan(const PlanKey& key, cublasLtHandle_t handle) {
  static std::mutex mutex;
  static std::map<PlanKey, Plan> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(key, handle)).first;
  return it->second;
}

// Largest power of two up to 256 dividing the address.
unsigned alignment(const void* ptr) {
  auto address = reinterpret_cast<uintptr_t>(ptr);
  unsigned bytes = 256;
  while (bytes > 1 && address % bytes != 0) bytes /= 2;
  return bytes;
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args) {
  INFLLM_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3 && a.is_contiguous() &&
                   b.is_contiguous() && out.is_contiguous(),
               "matmul on CUDA: expected contiguous 3-D operands, got a ", a.str(), ", b ", b.str(),
               ", out ", out.str());
  int64_t batch = out.size(0), m = out.size(1), n = out.size(2);
  int64_t k = args.trans_a ? a.size(1) : a.size(2);
  bool shapes_ok = (args.trans_a ? a.size(2) : a.size(1)) == m &&
                   (args.trans_b ? b.size(1) : b.size(2)) == n &&
                   (args.trans_b ? b.size(2) : b.size(1)) == k &&
                   (a.size(0) == batch || a.size(0) == 1) && (b.size(0) == batch || b.size(0) == 1);
  INFLLM_CHECK(shapes_ok, "matmul on CUDA: shapes a ", shape_str(a.shape()),
               args.trans_a ? "^T" : "", ", b ", shape_str(b.shape()), args.trans_b ? "^T" : "",
               " and out ", shape_str(out.shape()), " do not match [batch, M, K] @ [batch, K, N]");
  INFLLM_CHECK(a.dtype() == b.dtype() && (a.dtype() == DType::bf16 || a.dtype() == DType::f32) &&
                   (out.dtype() == DType::f32 || out.dtype() == DType::bf16) &&
                   (a.dtype() == DType::bf16 || out.dtype() == DType::f32),
               "matmul on CUDA: supported dtypes are bf16 x bf16 -> bf16 or f32 and "
               "f32 x f32 -> f32, got ",
               dtype_name(a.dtype()), " x ", dtype_name(b.dtype()), " -> ",
               dtype_name(out.dtype()));
  INFLLM_CHECK(a.device() == out.device() && b.device() == out.device(),
               "matmul on CUDA: operands on different devices: ", a.str(), ", ", b.str(), ", ",
               out.str());
  INFLLM_CHECK(batch < (int64_t(1) << 31), "matmul on CUDA: batch ", batch, " too large");
  if (out.numel() == 0) return;
  INFLLM_CHECK(k > 0, "matmul on CUDA: K = 0 (empty inner dimension) for out ", out.str());

  // A weight shared by the whole batch times a plain a: one [batch * M, K] @ [K, N] product is
  // faster than a strided batch that rereads b.
  bool shared_b = b.size(0) == 1 && a.size(0) == batch && !args.trans_a;
  if (shared_b) {
    m *= batch;
    batch = 1;
  }
  DeviceScope scope(out.device());
  DeviceContext& context = device_context(scope.device());
  PlanKey key{scope.device(),
              a.dtype(),
              out.dtype(),
              args.trans_a,
              args.trans_b,
              a.size(0) == 1 && batch > 1,
              b.size(0) == 1 && batch > 1,
              batch,
              m,
              n,
              k,
              alignment(a.data_ptr()),
              alignment(b.data_ptr()),
              alignment(out.data_ptr())};
  const Plan& plan = find_plan(key, context.handle);
  CUBLAS_CHECK(cublasLtMatmul(context.handle, plan.desc, &args.alpha, b.data_ptr(), plan.layout_b,
                              a.data_ptr(), plan.layout_a, &args.beta, out.data_ptr(),
                              plan.layout_out, out.data_ptr(), plan.layout_out, &plan.algo,
                              context.workspace, kWorkspaceBytes, scope.stream()));
}

}  // namespace infllm::cuda
