// The half kernels of every optimizer (training_kernels.h).
#include "kernels/training_kernels.h"

namespace tensorflow {
namespace {
[[maybe_unused]] const bool registered = RegisterKernelsForType<Eigen::half>();
}  // namespace
}  // namespace tensorflow
