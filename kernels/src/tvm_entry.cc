// TVM entry points: export ac_compact_conv2d as TVM-FFI functions, so a compiled model calls them through
// R.call_dps_packed("ac_compact_conv2d", ...) (see ac_toolchain/compile/lowering.py). Linked into model.so, with
// compact_conv.cc built with -DAC_PARALLEL_TVM so the kernel runs on TVM's thread pool.
//
// ac_compact_conv2d: x [N, C, H, W] f32, packed weight [ceil(F/8), K, 8] f32, rows [K] i64, bias [F] f32,
// geometry [9] i64 = (kh, kw, sh, sw, ph, pw, dh, dw, relu), y [N, F, OH, OW] f32 (written).
// ac_compact_conv2d_add: the same with a residual [N, F, OH, OW] f32 after the geometry, added before the ReLU
// (a ResNet block's shortcut, fused instead of two more ops and their buffers).
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include "ac/compact_conv.h"

namespace {

using tvm::ffi::TensorView;

int32_t dim(const TensorView& t, int i) { return static_cast<int32_t>(t.shape()[i]); }

void expect(const TensorView& t, const char* name, uint8_t code, uint8_t bits) {
  if (t.dtype().code != code || t.dtype().bits != bits || t.dtype().lanes != 1 || !t.IsContiguous()) {
    TVM_FFI_THROW(TypeError) << "ac_compact_conv2d: " << name << " must be a contiguous "
                             << (code == kDLFloat ? "float" : "int") << static_cast<int>(bits) << " tensor";
  }
}

void Run(TensorView x, TensorView packed, TensorView rows, TensorView bias, TensorView geometry,
         const float* residual, TensorView y) {
  if (x.ndim() != 4 || y.ndim() != 4 || rows.ndim() != 1 || geometry.ndim() != 1 || geometry.shape()[0] != 9) {
    TVM_FFI_THROW(ValueError) << "ac_compact_conv2d: unexpected argument ranks";
  }
  expect(x, "x", kDLFloat, 32), expect(packed, "packed weight", kDLFloat, 32), expect(rows, "rows", kDLInt, 64);
  expect(bias, "bias", kDLFloat, 32), expect(geometry, "geometry", kDLInt, 64), expect(y, "y", kDLFloat, 32);
  const auto* g = static_cast<const int64_t*>(geometry.data_ptr());
  ac_conv_shape s{dim(x, 0), dim(x, 1), dim(x, 2), dim(x, 3), dim(y, 1), dim(rows, 0),
                  static_cast<int32_t>(g[0]), static_cast<int32_t>(g[1]), static_cast<int32_t>(g[2]),
                  static_cast<int32_t>(g[3]), static_cast<int32_t>(g[4]), static_cast<int32_t>(g[5]),
                  static_cast<int32_t>(g[6]), static_cast<int32_t>(g[7]), dim(y, 2), dim(y, 3),
                  static_cast<int32_t>(g[8])};
  const int err = ac_compact_conv2d(&s, static_cast<const float*>(x.data_ptr()),
                                    static_cast<const float*>(packed.data_ptr()),
                                    static_cast<const int64_t*>(rows.data_ptr()),
                                    static_cast<const float*>(bias.data_ptr()), residual,
                                    static_cast<float*>(y.data_ptr()), 0);
  if (err) {
    TVM_FFI_THROW(ValueError) << "ac_compact_conv2d: " << ac_conv_error(err) << " (input " << s.n << "x" << s.c
                              << "x" << s.h << "x" << s.w << ", output " << s.f << "x" << s.oh << "x" << s.ow
                              << ", kernel " << s.kh << "x" << s.kw << ", stride " << s.sh << "x" << s.sw
                              << ", padding " << s.ph << "x" << s.pw << ", dilation " << s.dh << "x" << s.dw
                              << ", " << s.k << " rows)";
  }
}

void CompactConv2d(TensorView x, TensorView packed, TensorView rows, TensorView bias, TensorView geometry,
                   TensorView y) {
  Run(x, packed, rows, bias, geometry, nullptr, y);
}

void CompactConv2dAdd(TensorView x, TensorView packed, TensorView rows, TensorView bias, TensorView geometry,
                      TensorView residual, TensorView y) {
  expect(residual, "residual", kDLFloat, 32);
  bool same = residual.ndim() == y.ndim();
  for (int i = 0; same && i < y.ndim(); ++i) same = residual.shape()[i] == y.shape()[i];
  if (!same) TVM_FFI_THROW(ValueError) << "ac_compact_conv2d_add: the residual must have the output's shape";
  Run(x, packed, rows, bias, geometry, static_cast<const float*>(residual.data_ptr()), y);
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(ac_compact_conv2d, CompactConv2d);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(ac_compact_conv2d_add, CompactConv2dAdd);

#ifdef AC_SYSTEM_LIB
// The device runner links models as a TVM system library: the VM finds packed functions in the system-library
// symbol table, so the kernel registers itself there as the model's own functions do.
namespace {
const int kRegistered = TVMFFIEnvModRegisterSystemLibSymbol(
    "__tvm_ffi_ac_compact_conv2d", reinterpret_cast<void*>(&__tvm_ffi_ac_compact_conv2d));
const int kRegisteredAdd = TVMFFIEnvModRegisterSystemLibSymbol(
    "__tvm_ffi_ac_compact_conv2d_add", reinterpret_cast<void*>(&__tvm_ffi_ac_compact_conv2d_add));
}  // namespace
#endif
