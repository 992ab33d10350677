// Registration of FusedAdviseHugePages (kernel in huge_pages_kernels.cc).
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {

REGISTER_OP("FusedAdviseHugePages")
    .Input("var: resource")
    .Output("advised_bytes: int64")
    .Output("collapsed: bool")
    .Attr("collapse: bool = true")
    .Attr("once: bool = false")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return absl::OkStatus();
    })
    .Doc(R"doc(
Asks Linux to back the variable's buffer with transparent huge pages (madvise MADV_HUGEPAGE on
its 2 MiB-aligned part) and, if collapse, to collapse the pages it already has into huge pages now
(MADV_COLLAPSE, Linux 6.1+). Values are unchanged. With once, a buffer this process has already
advised with once is left alone (advised_bytes 0): the optimizers run it in every step, so that
each buffer is advised once, whichever step of the process first sees it.

advised_bytes: the bytes advised (0 for a buffer that holds no whole 2 MiB page, or a kernel
  without transparent huge pages).
collapsed: whether the collapse succeeded.
)doc");

}  // namespace tensorflow
