/* int8 column-pruned (compact) 2-D convolution over the kept im2col rows: int8 x int8 -> int32, requantized to
 * int8 with the bias, an optional residual and ReLU fused (src/compact_conv_int8.cc). The int8 twin of
 * ac_compact_conv2d (compact_conv.h): the same shape struct, row numbering and geometry.
 *
 * Quantization (ONNX QDQ / onnxruntime QLinearConv):
 *   x      int8 [N, C, H, W], one scale s_x and zero point zx for the tensor; the padding reads zx (contributes 0);
 *   weight int8 [F, K] (column k multiplying kept row rows[k]), symmetric, one scale s_w[f] per output channel
 *          (zero point 0); passed packed by ac_conv_int8_pack_weights, done once per layer;
 *   bias   int32 [F] (or NULL = 0), scale s_x * s_w[f], zero point 0;
 *   y      int8 [N, F, OH, OW], one scale s_y and zero point zy;
 *   res    int8 [N, F, OH, OW] (or NULL), one scale s_r and zero point zr: a ResNet block's shortcut.
 *
 * Exactly what the kernel computes, per output value (f, oy, ox of image n):
 *   acc = bias[f] + sum_k weight[f, k] * (x_pad[n, c_k, oy*sh + kh_k*dh, ox*sw + kw_k*dw] - zx)
 *         (exact integer; rows r = (kh * KW + kw) * C + c, tap-major; x_pad is x with zx in the padding)
 *   a   = (float) acc                       int -> float32, round to nearest even (exact for |acc| <= 2^24)
 *   v   = (double) a * (double) m[f]        m[f] = multiplier[f], float32, the caller's s_x * s_w[f] / s_y
 *       [ + (double) (res - zr) * (double) m_r ]   m_r = res_multiplier, float32, the caller's s_r / s_y
 *         Both products are exact in double (24 x 24 and 9 x 24 bits), so v is the exact sum rounded once to
 *         double -- the same with or without FMA contraction, and what numpy computes in float64.
 *   y   = clamp(round_half_even(v) + zy, lo, 127),   lo = zy with relu (ReLU fused: clamp at zy), else -128.
 * The caller chooses how the float32 multipliers are derived from the scales (ac_toolchain.native:
 * requant_multipliers rounds the float64 s_x * s_w[f] / s_y to float32); the kernel sees only m and m_r.
 *
 * Limits (checked): 1 <= K <= 65536 so the int32 sums cannot overflow (|acc - bias| <= 255 * 128 * K), zero
 * points in [-128, 127], multipliers finite and > 0 (m_r >= 0). The bias must keep |acc| < 2^31 (not checked).
 *
 * Packed weights: an opaque byte buffer of ac_conv_int8_packed_size(f, k) bytes, built by
 * ac_conv_int8_pack_weights for the build that runs it (the x86 AVX2 path without VNNI keeps the weights widened
 * to int16). Layout: [ceil(F/8)][ceil(K/4)][8][4] weights (w[b*8 + r, 4q + j] at [b][q][r][j], zeros past F and
 * K), then int32 column sums sum_k w[f, k] for ceil(F/8)*8 channels.
 */
#ifndef AC_COMPACT_CONV_INT8_H_
#define AC_COMPACT_CONV_INT8_H_

#include <stddef.h>
#include <stdint.h>

#include "ac/compact_conv.h" /* ac_conv_shape (relu: the ReLU fused as clamp at zy) */

#define AC_CONV_INT8_MAX_K 65536

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const float* multiplier; /* [F]: m[f], float32, s_x * s_w[f] / s_y */
  float res_multiplier;    /* m_r = s_r / s_y (read only with a residual) */
  int32_t x_zero;          /* zx */
  int32_t y_zero;          /* zy */
  int32_t res_zero;        /* zr (read only with a residual) */
} ac_conv_int8_quant;

/* Bytes of the packed weights of an [f, k] int8 matrix, for this build. */
size_t ac_conv_int8_packed_size(int f, int k);
void ac_conv_int8_pack_weights(int f, int k, const int8_t* weight, void* packed);

/* Returns 0, or a negative code (see ac_conv_int8_error). threads <= 0: default (OpenMP's). Scratch memory is kept
 * per calling thread for the next call: a padded copy of the input (padded convs), panels of ceil(K/4)*4 x 64 bytes
 * per pixel tile and an int32 accumulator tile per thread. */
int ac_compact_conv2d_int8(const ac_conv_shape* s, const ac_conv_int8_quant* q, const int8_t* x, const void* packed,
                           const int64_t* rows, const int32_t* bias /* may be NULL */,
                           const int8_t* residual /* [N, F, OH, OW] or NULL */, int8_t* y, int threads);

const char* ac_conv_int8_error(int code);

/* The multiply path this build runs: "avx512-vnni", "avx-vnni", "avx2", "neon-sdot", "neon" or "scalar". */
const char* ac_conv_int8_path(void);

#ifdef __cplusplus
}
#endif

#endif /* AC_COMPACT_CONV_INT8_H_ */
