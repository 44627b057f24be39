// Minimal stand-in for TVM's <tvm/support/cuda/nvtx.h>: NVTX ranges only exist in CUDA builds; the
// runner is CPU-only, so a range marks nothing (as in TVM built without NVTX).
#ifndef AC_COMPAT_TVM_SUPPORT_CUDA_NVTX_H_
#define AC_COMPAT_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
};

}  // namespace support
}  // namespace tvm

#endif  // AC_COMPAT_TVM_SUPPORT_CUDA_NVTX_H_
