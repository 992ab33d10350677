// The bfloat16 kernels of every optimizer (training_kernels.h).
#include "kernels/training_kernels.h"

namespace tensorflow {
namespace {
[[maybe_unused]] const bool registered = RegisterKernelsForType<Eigen::bfloat16>();
}  // namespace
}  // namespace tensorflow
