/* Column-pruned (compact) 2-D convolution over the kept im2col rows, the native twin of
 * ac_toolchain.compact.modules.CompactConv2d (direct register-tiled paths on AVX2, a gather-GEMM elsewhere: see
 * src/compact_conv.cc).
 *
 * Layout (the same as CompactConv2d):
 *   im2col rows are numbered tap-major, r = (kh * KW + kw) * C + c;
 *   rows[k] (ascending, K entries) are the kept rows;
 *   weight is the dense [F, K] GEMM matrix, column k multiplying row rows[k], passed packed by
 *   ac_conv_pack_weights as [ceil(F/AC_CONV_MR)][K][AC_CONV_MR] (zero rows past F), done once per layer;
 *   y[n, f, oy, ox] = act(bias[f] + sum_k weight[f, k] * x_pad[n, c_k, oy*sh + kh_k*dh, ox*sw + kw_k*dw]
 *                        + residual[n, f, oy, ox]),
 *   the residual (a ResNet block's shortcut) optional.
 * A plain convolution is the case K = C*KH*KW with rows = 0..K-1.
 */
#ifndef AC_COMPACT_CONV_H_
#define AC_COMPACT_CONV_H_

#include <stddef.h>
#include <stdint.h>

#define AC_CONV_MR 8 /* output channels per packed weight block: the same on every ISA */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t n, c, h, w;            /* input  [N, C, H, W] */
  int32_t f, k;                  /* output channels, kept im2col rows */
  int32_t kh, kw, sh, sw, ph, pw, dh, dw;
  int32_t oh, ow;                /* output [N, F, OH, OW] */
  int32_t relu;                  /* 1: y = max(y, 0) after the bias and residual */
} ac_conv_shape;

/* Floats in the packed weights of an [f, k] matrix. */
size_t ac_conv_packed_size(int f, int k);
void ac_conv_pack_weights(int f, int k, const float* weight, float* packed);

/* Returns 0, or a negative code when the shape is inconsistent (see ac_conv_error). threads <= 0: default.
 * Scratch memory (kept per calling thread for the next call): a zero-padded copy of the input (padded convs and
 * the implicit GEMM), and for the gather-GEMM panels of K x P floats (P = OH*OW rounded up). */
int ac_compact_conv2d(const ac_conv_shape* s, const float* x, const float* packed_weight, const int64_t* rows,
                      const float* bias /* may be NULL */, const float* residual /* [N, F, OH, OW] or NULL */,
                      float* y, int threads);

const char* ac_conv_error(int code);

#ifdef __cplusplus
}
#endif

#endif  /* AC_COMPACT_CONV_H_ */
