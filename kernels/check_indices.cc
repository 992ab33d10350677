// FusedCheckSparseIndices: the indices of a step's sparse gradients checked against their
// variables' rows, all at once. The optimizers run it before the step's first write and make
// every write of the step wait for it, so that a step with one bad index changes no variable, no
// slot and no step count (each fused op checks its own indices too, but other updates of the
// step may have run by then).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_vector_copy.h"
#include "kernels/numeric.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tensorflow {

REGISTER_OP("FusedCheckSparseIndices")
    .Input("indices: T")
    .Input("num_rows: int64")
    .Attr("T: list({int32, int64}) >= 1")
    .Attr("names: list(string)")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(c->num_inputs() - 1), 1, &rows));
      shape_inference::DimensionHandle unused;
      return c->WithValue(c->Dim(rows, 0), c->num_inputs() - 1, &unused);
    })
    .Doc(R"doc(
Fails, naming the variable, the position and the value, if any of indices[i] is outside
[0, num_rows[i]). Writes nothing.

indices: the indices of each sparse gradient (any shape).
num_rows: the rows of each gradient's variable.
names: each gradient's variable, for the error.
)doc");

namespace {

// The largest of indices[0, n) as an unsigned number of the index's width, where a negative
// index is above every non-negative one: a max reduction, which vectorises, run in the widest
// copy the CPU has (cpu_vector_copy.h; the baseline x86-64 copy has no unsigned vector max).
template <typename Index>
struct LargestUnsigned {
  const Index* indices;
  int64_t n;
  std::make_unsigned_t<Index>* result;

  TF_FTRL_INLINE void operator()() const {
    using Unsigned = std::make_unsigned_t<Index>;
    Unsigned largest = 0;
    for (int64_t i = 0; i < n; ++i) {
      const Unsigned value = static_cast<Unsigned>(indices[i]);
      largest = value > largest ? value : largest;
    }
    *result = largest;
  }
};

// The first position of indices[0, n) outside [0, num_rows), or -1. The whole list is reduced
// first (26 lists of 4,096 int32 indices: 8 us in the AVX-512 copy, 79 for a loop that stops at
// the first bad index); the position is looked for only when one exists.
template <typename Index>
int64_t FirstOutOfRange(const Index* indices, int64_t n, int64_t num_rows) {
  if (n == 0) return -1;
  const uint64_t bound = static_cast<uint64_t>(num_rows < 0 ? 0 : num_rows);
  // Non-negative indices are at most Index's maximum; negative ones are above it as unsigned.
  const uint64_t limit =
      std::min(bound, static_cast<uint64_t>(std::numeric_limits<Index>::max()) + 1);
  std::make_unsigned_t<Index> largest = 0;
  tf_ftrl::cpu::internal::RunIn(tf_ftrl::cpu::internal::BestVectorCopy(),
                                LargestUnsigned<Index>{indices, n, &largest});
  if (static_cast<uint64_t>(largest) < limit) return -1;
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<uint64_t>(static_cast<int64_t>(indices[i])) >= bound) return i;
  }
  return -1;
}

class FusedCheckSparseIndicesOp : public OpKernel {
 public:
  explicit FusedCheckSparseIndicesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("names", &names_));
  }

  void Compute(OpKernelContext* ctx) override {
    OpInputList indices;
    OP_REQUIRES_OK(ctx, ctx->input_list("indices", &indices));
    const Tensor& num_rows = ctx->input(indices.size());
    OP_REQUIRES(ctx,
                TensorShapeUtils::IsVector(num_rows.shape()) &&
                    num_rows.NumElements() == indices.size(),
                absl::InvalidArgumentError(absl::StrCat(
                    "num_rows must be a vector of ", indices.size(), " row counts, got shape ",
                    num_rows.shape().DebugString())));
    OP_REQUIRES(ctx, static_cast<int>(names_.size()) == indices.size(),
                absl::InvalidArgumentError(absl::StrCat("names must hold ", indices.size(),
                                                        " names, got ", names_.size())));
    const auto rows = num_rows.vec<int64_t>();
    for (int i = 0; i < indices.size(); ++i) {
      const Tensor& list = indices[i];
      int64_t position = -1;
      int64_t value = 0;
      if (list.dtype() == DT_INT32) {
        const int32_t* data = list.flat<int32_t>().data();
        position = FirstOutOfRange(data, list.NumElements(), rows(i));
        if (position >= 0) value = data[position];
      } else {
        const int64_t* data = list.flat<int64_t>().data();
        position = FirstOutOfRange(data, list.NumElements(), rows(i));
        if (position >= 0) value = data[position];
      }
      OP_REQUIRES(ctx, position < 0,
                  absl::InvalidArgumentError(absl::StrCat(
                      "the sparse gradient of ", names_[i], ": indices[", position, "] = ",
                      value, " is not in [0, ", rows(i), "); the step changed nothing")));
    }
  }

 private:
  std::vector<std::string> names_;
};

REGISTER_KERNEL_BUILDER(Name("FusedCheckSparseIndices").Device(DEVICE_CPU),
                        FusedCheckSparseIndicesOp);

}  // namespace
}  // namespace tensorflow
