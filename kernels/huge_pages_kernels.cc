// The kernel of FusedAdviseHugePages (registered in huge_pages_ops.cc): asks Linux to back a
// variable's buffer with transparent huge pages.
//
// A sparse update touches rows scattered over tables of hundreds of MB; with 4 KiB pages each row
// costs a page walk, and the walks, not the bandwidth, bound the update once other work has
// evicted the page tables (docs/benchmarks.md, "Transparent huge pages"). TensorFlow's
// allocations get huge pages only when the whole process asks
// (GLIBC_TUNABLES=glibc.malloc.hugetlb=1 at start-up); this op asks for one variable, at any
// time: madvise(MADV_HUGEPAGE) on the 2 MiB-aligned part of its buffer, then, if `collapse`,
// madvise(MADV_COLLAPSE) (Linux 6.1+) to move the pages that are already there into huge pages
// now rather than whenever khugepaged gets to them. Neither changes a value; the variable stays
// usable from other threads throughout.
//
// With `once`, the op remembers each buffer it advised (its address and size, for the life of the
// process) and leaves it alone when it sees it again: the optimizers run it in every step, which
// then costs a lookup, so the first step of any process advises the buffers (a model loaded to
// resume training, whose step count is no longer 0, too), and so does the step after one that
// gave a variable a new buffer. A buffer freed and another mapped at the same address with the
// same size is taken for the old one (it then misses the advice; nothing else changes). A
// variable whose buffer kept changing would be collapsed at every step: after
// kMaxBuffersPerVariable of its buffers, `once` leaves its new ones alone.
#include <cstdint>
#include <map>
#include <set>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/platform/mutex.h"

namespace tensorflow {
namespace {

constexpr uintptr_t kHugePageBytes = uintptr_t{2} << 20;
// Linux's value; older C libraries do not define the name.
constexpr int kMadviseCollapse = 25;

constexpr int kMaxBuffersPerVariable = 8;

// The buffers advised with `once`, as (address, size), and how many each variable had.
class AdvisedBuffers {
 public:
  // Whether `variable`'s buffer (begin, size) is to be advised: not yet in the set, and the
  // variable below kMaxBuffersPerVariable buffers. Adds it then.
  bool Insert(const Var* variable, uintptr_t begin, size_t size) {
    mutex_lock lock(mu_);
    if (buffers_.count({begin, size}) > 0) return false;
    int& count = per_variable_[variable];
    if (count >= kMaxBuffersPerVariable) return false;
    ++count;
    buffers_.insert({begin, size});
    return true;
  }

 private:
  mutex mu_;
  std::set<std::pair<uintptr_t, size_t>> buffers_ TF_GUARDED_BY(mu_);
  std::map<const Var*, int> per_variable_ TF_GUARDED_BY(mu_);
};

AdvisedBuffers& AdvisedOnce() {
  static auto* buffers = new AdvisedBuffers;
  return *buffers;
}

class FusedAdviseHugePagesOp : public OpKernel {
 public:
  explicit FusedAdviseHugePagesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("collapse", &collapse_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("once", &once_));
  }

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<Var> var;
    const absl::Status found = LookupResource(ctx, HandleFromInput(ctx, 0), &var);
    OP_REQUIRES(ctx, found.ok(),
                absl::FailedPreconditionError(absl::StrCat(
                    "Could not read variable var; it may be uninitialized: ", found.message())));
    int64_t advised = 0;
    bool collapsed = false;
    {
      // The buffer is only read (its address and size); a shared lock keeps it from being
      // replaced meanwhile.
      tf_shared_lock lock(*var->mu());
      const Tensor* tensor = var->tensor();
      OP_REQUIRES(ctx, tensor->IsInitialized(),
                  absl::FailedPreconditionError("Attempting to use uninitialized variable: var"));
      const auto data = tensor->tensor_data();
      const uintptr_t begin = reinterpret_cast<uintptr_t>(data.data());
      const uintptr_t end = begin + data.size();
      const uintptr_t first = (begin + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
      const uintptr_t last = end / kHugePageBytes * kHugePageBytes;
#if defined(__linux__)
      if (last > first && (!once_ || AdvisedOnce().Insert(var.get(), begin, data.size()))) {
        void* start = reinterpret_cast<void*>(first);
        const size_t length = last - first;
        // EINVAL: the kernel has no transparent huge pages (or they are off). Nothing is
        // advised then, and that is the answer, not an error.
        if (madvise(start, length, MADV_HUGEPAGE) == 0) {
          advised = static_cast<int64_t>(length);
          // Fails (EINVAL before Linux 6.1, EAGAIN/ENOMEM without free huge pages) without
          // harm: the advice stands and khugepaged collapses the pages later.
          collapsed = collapse_ && madvise(start, length, kMadviseCollapse) == 0;
        }
      }
#endif
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int64_t>()() = advised;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &out));
    out->scalar<bool>()() = collapsed;
  }

 private:
  bool collapse_;
  bool once_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("FusedAdviseHugePages").Device(DEVICE_CPU),
                        FusedAdviseHugePagesOp);

}  // namespace tensorflow
