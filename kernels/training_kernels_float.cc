// The float kernels of every optimizer (training_kernels.h).
#include "kernels/training_kernels.h"

namespace tensorflow {
namespace {
[[maybe_unused]] const bool registered = RegisterKernelsForType<float>();
}  // namespace
}  // namespace tensorflow
