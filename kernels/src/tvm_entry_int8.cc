// TVM entry points of the int8 compact conv (compact_conv_int8.cc): a compiled QDQ model calls them through
// R.call_dps_packed("ac_compact_conv2d_int8", ...) (see ac_toolchain/compile/lowering.py). Linked into model.so
// (or the static runner), with compact_conv_int8.cc built with -DAC_PARALLEL_TVM so it runs on TVM's thread pool.
//
// ac_compact_conv2d_int8: x [N, C, H, W] i8, weight [F, K] i8 (plain, not packed: column k multiplies kept row
// rows[k]), rows [K] i64, bias [F] i32, multiplier [F + 1] f32 = (m[0..F-1], m_r), geometry [12] i64 =
// (kh, kw, sh, sw, ph, pw, dh, dw, relu, x_zero, y_zero, res_zero), y [N, F, OH, OW] i8 (written).
// ac_compact_conv2d_int8_add: the same with a residual [N, F, OH, OW] i8 after the geometry (scale: m_r, zero
// point: res_zero), added before the ReLU.
//
// The weights arrive plain because the packed layout belongs to the build that runs it (the AVX2 path packs int16)
// and a cross build cannot run the target's packer. The entry packs them with this build's
// ac_conv_int8_pack_weights on first use and keeps the packed copy, keyed by the weight tensor's address and
// checked against a copy of its bytes (a constant freed with one module may share an address with another's).
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "ac/compact_conv_int8.h"

namespace {

using tvm::ffi::TensorView;

int32_t dim(const TensorView& t, int i) { return static_cast<int32_t>(t.shape()[i]); }

void expect(const TensorView& t, const char* name, uint8_t code, uint8_t bits) {
  if (t.dtype().code != code || t.dtype().bits != bits || t.dtype().lanes != 1 || !t.IsContiguous()) {
    TVM_FFI_THROW(TypeError) << "ac_compact_conv2d_int8: " << name << " must be a contiguous "
                             << (code == kDLFloat ? "float" : "int") << static_cast<int>(bits) << " tensor";
  }
}

struct Packed {
  std::vector<int8_t> plain;   // the weights it was packed from
  std::vector<uint8_t> bytes;  // ac_conv_int8_pack_weights of them
};

// The packed weights of `weight` [f, k]: packed on the first call that sees these bytes at this address.
std::shared_ptr<const Packed> packed_weights(const int8_t* weight, int f, int k) {
  static std::mutex lock;
  static std::map<const void*, std::shared_ptr<const Packed>> cache;
  const size_t n = static_cast<size_t>(f) * k;
  std::lock_guard<std::mutex> guard(lock);
  auto& slot = cache[weight];
  if (!slot || slot->plain.size() != n || std::memcmp(slot->plain.data(), weight, n) != 0) {
    auto fresh = std::make_shared<Packed>();
    fresh->plain.assign(weight, weight + n);
    fresh->bytes.resize(ac_conv_int8_packed_size(f, k));
    ac_conv_int8_pack_weights(f, k, weight, fresh->bytes.data());
    slot = std::move(fresh);  // a call still running on the old copy holds its own reference
  }
  return slot;
}

void Run(TensorView x, TensorView weight, TensorView rows, TensorView bias, TensorView multiplier,
         TensorView geometry, const int8_t* residual, TensorView y) {
  if (x.ndim() != 4 || y.ndim() != 4 || weight.ndim() != 2 || rows.ndim() != 1 || bias.ndim() != 1 ||
      multiplier.ndim() != 1 || geometry.ndim() != 1 || geometry.shape()[0] != 12) {
    TVM_FFI_THROW(ValueError) << "ac_compact_conv2d_int8: unexpected argument ranks";
  }
  expect(x, "x", kDLInt, 8), expect(weight, "weight", kDLInt, 8), expect(rows, "rows", kDLInt, 64);
  expect(bias, "bias", kDLInt, 32), expect(multiplier, "multiplier", kDLFloat, 32);
  expect(geometry, "geometry", kDLInt, 64), expect(y, "y", kDLInt, 8);
  const int f = dim(y, 1), k = dim(rows, 0);
  if (dim(weight, 0) != f || dim(weight, 1) != k || dim(bias, 0) != f || dim(multiplier, 0) != f + 1) {
    TVM_FFI_THROW(ValueError) << "ac_compact_conv2d_int8: weight " << dim(weight, 0) << "x" << dim(weight, 1)
                              << ", bias " << dim(bias, 0) << ", multiplier " << dim(multiplier, 0) << " for " << f
                              << " channels and " << k << " rows";
  }
  const auto* g = static_cast<const int64_t*>(geometry.data_ptr());
  ac_conv_shape s{dim(x, 0), dim(x, 1), dim(x, 2), dim(x, 3), f, k,
                  static_cast<int32_t>(g[0]), static_cast<int32_t>(g[1]), static_cast<int32_t>(g[2]),
                  static_cast<int32_t>(g[3]), static_cast<int32_t>(g[4]), static_cast<int32_t>(g[5]),
                  static_cast<int32_t>(g[6]), static_cast<int32_t>(g[7]), dim(y, 2), dim(y, 3),
                  static_cast<int32_t>(g[8])};
  const auto* m = static_cast<const float*>(multiplier.data_ptr());
  const ac_conv_int8_quant q{m, m[f], static_cast<int32_t>(g[9]), static_cast<int32_t>(g[10]),
                             static_cast<int32_t>(g[11])};
  const auto packed = packed_weights(static_cast<const int8_t*>(weight.data_ptr()), f, k);
  const int err = ac_compact_conv2d_int8(&s, &q, static_cast<const int8_t*>(x.data_ptr()), packed->bytes.data(),
                                         static_cast<const int64_t*>(rows.data_ptr()),
                                         static_cast<const int32_t*>(bias.data_ptr()), residual,
                                         static_cast<int8_t*>(y.data_ptr()), 0);
  if (err) {
    TVM_FFI_THROW(ValueError) << "ac_compact_conv2d_int8: " << ac_conv_int8_error(err) << " (input " << s.n << "x"
                              << s.c << "x" << s.h << "x" << s.w << ", output " << s.f << "x" << s.oh << "x" << s.ow
                              << ", kernel " << s.kh << "x" << s.kw << ", stride " << s.sh << "x" << s.sw
                              << ", padding " << s.ph << "x" << s.pw << ", dilation " << s.dh << "x" << s.dw
                              << ", " << s.k << " rows)";
  }
}

void CompactConv2dInt8(TensorView x, TensorView weight, TensorView rows, TensorView bias, TensorView multiplier,
                       TensorView geometry, TensorView y) {
  Run(x, weight, rows, bias, multiplier, geometry, nullptr, y);
}

void CompactConv2dInt8Add(TensorView x, TensorView weight, TensorView rows, TensorView bias, TensorView multiplier,
                          TensorView geometry, TensorView residual, TensorView y) {
  expect(residual, "residual", kDLInt, 8);
  bool same = residual.ndim() == y.ndim();
  for (int i = 0; same && i < y.ndim(); ++i) same = residual.shape()[i] == y.shape()[i];
  if (!same) TVM_FFI_THROW(ValueError) << "ac_compact_conv2d_int8_add: the residual must have the output's shape";
  Run(x, weight, rows, bias, multiplier, geometry, static_cast<const int8_t*>(residual.data_ptr()), y);
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(ac_compact_conv2d_int8, CompactConv2dInt8);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(ac_compact_conv2d_int8_add, CompactConv2dInt8Add);

#ifdef AC_SYSTEM_LIB
// The device runner links models as a TVM system library: the VM finds packed functions in the system-library
// symbol table, so the kernel registers itself there as the model's own functions do.
namespace {
const int kRegistered = TVMFFIEnvModRegisterSystemLibSymbol(
    "__tvm_ffi_ac_compact_conv2d_int8", reinterpret_cast<void*>(&__tvm_ffi_ac_compact_conv2d_int8));
const int kRegisteredAdd = TVMFFIEnvModRegisterSystemLibSymbol(
    "__tvm_ffi_ac_compact_conv2d_int8_add", reinterpret_cast<void*>(&__tvm_ffi_ac_compact_conv2d_int8_add));
}  // namespace
#endif
