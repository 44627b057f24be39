// int8 convolution over the kept im2col rows (see include/ac/compact_conv_int8.h for the layout and the exact
// requantization).
//
// Per image: copy the input once with its zero point in the borders (convs without padding read the input
// itself). Per tile of NT output pixels, gather the kept im2col rows into a panel [ceil(K/4)][NT][4] of bytes:
// four consecutive kept rows of one pixel are adjacent, the operand of one 4-way dot product. Then the packed
// weights [ceil(F/8)][ceil(K/4)][8][4] are multiplied with it in blocks of OC channels, K in blocks of KQ quads, by
// an RB x (V * PV) register-tiled micro-kernel into an int32 accumulator tile, and the tile is requantized to int8
// when it is stored (bias, zero-point correction, residual, ReLU). The multiply, by build:
// - neon-sdot (aarch64 with __ARM_FEATURE_DOTPROD): sdot by lane, 8 channels x 12 pixels (24 accumulators);
// - neon (plain armv8-a): smull / smull2 (int8 x int8 -> int16, exact) and sadalp (pairwise into int32);
// - avx512-vnni / avx-vnni: vpdpbusd (u8 x s8, 4-way, into int32); the panel holds x + 128 as u8 (x ^ 0x80) and
//   the tile subtracts 128 * sum_k w[f, k] with the input's zero point;
// - avx2: the panel widened to int16 (vpmovsxbw) and vpmaddwd against weights packed as int16: exact, where
//   vpmaddubsw's int16 pair sums would saturate (255 * 127 * 2 > 32767);
// - scalar: plain loops (any other build, e.g. baseline x86-64).
// The zero point is never subtracted per value: sum_k w * (x - zx) = sum_k w * x - zx * sum_k w, with the column
// sums computed when the weights are packed; padding holds zx, so it contributes w * zx - zx * w = 0.
// Threads: OpenMP in the standalone library, TVM's thread pool with -DAC_PARALLEL_TVM; work items are claimed
// one at a time from a shared counter.
#include "ac/compact_conv_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(AC_PARALLEL_TVM)
#include <tvm/runtime/c_backend_api.h>
#elif defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
#elif defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#define AC_I8_SDOT 1
#elif defined(__aarch64__)
#define AC_I8_NEON 1
#elif (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)
#define AC_I8_VNNI 1
#elif defined(__AVX2__)
#define AC_I8_AVX2 1
#else
#define AC_I8_SCALAR 1
#endif

namespace {

constexpr int MR = AC_CONV_MR;  // output channels per packed weight block
constexpr int KQ4 = 4;          // kept rows per quad (one 4-way dot product)

// Per path: PV output pixels per vector, RB x (up to WIDE vectors) register tile, the panel's byte shift and the
// packed weights' element type.
#if defined(AC_I8_SDOT)
constexpr const char* kPath = "neon-sdot";
constexpr int PV = 4, RB = 8, WIDE = 3;  // 24 accumulators + 2 weight + 3 panel vectors of the 32
typedef int8_t wtype;
constexpr unsigned kShift = 0;
#elif defined(AC_I8_NEON)
constexpr const char* kPath = "neon";
constexpr int PV = 4, RB = 4, WIDE = 2;  // 2 accumulators per vector: 16
typedef int8_t wtype;
constexpr unsigned kShift = 0;
#elif defined(AC_I8_VNNI)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
constexpr const char* kPath = "avx512-vnni";
#else
constexpr const char* kPath = "avx-vnni";
#endif
#if defined(__AVX512F__)
constexpr int PV = 8, RB = 8, WIDE = 3;  // 24 of the 32 vector registers
#else
constexpr int PV = 8, RB = 4, WIDE = 3;  // 12 of the 16
#endif
typedef int8_t wtype;
constexpr unsigned kShift = 0x80;  // vpdpbusd multiplies unsigned bytes: the panel holds x + 128
#elif defined(AC_I8_AVX2)
constexpr const char* kPath = "avx2";
constexpr int PV = 8, RB = 4, WIDE = 1;  // 2 accumulators per vector: 8, + 2 panel halves + 1 weight
typedef int16_t wtype;                   // widened when packed: vpmaddwd reads them as a broadcast quad
constexpr unsigned kShift = 0;
#else
constexpr const char* kPath = "scalar";
constexpr int PV = 4, RB = 8, WIDE = 2;
typedef int8_t wtype;
constexpr unsigned kShift = 0;
#endif
static_assert(MR % RB == 0, "a register tile takes whole rows of a packed block");

constexpr int NT = 64;       // output pixels per tile (a multiple of every PV)
constexpr int OC = 8 * MR;   // output channels per accumulator tile
constexpr int KQ = 64;       // quads (256 kept rows) per K block: the weight block KQ x MR x 4 stays in L1
constexpr int kFusedTiles = 8;    // from this many pixel tiles on, each tile gathers its own panel
constexpr int kGatherQuads = 32;  // otherwise panels are gathered in parallel chunks of this many quads

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }
inline int quads(int k) { return (k + KQ4 - 1) / KQ4; }

// ---- parallel loop: OpenMP threads or TVM's thread pool; items claimed one at a time ----

template <typename Body>
struct Claims {
  const Body& body;
  int items;
  std::atomic<int> next{0};
  void run() {
    for (int i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items;) body(i);
  }
};

#if defined(AC_PARALLEL_TVM)
template <typename C>
int run_claims(int, TVMParallelGroupEnv*, void* data) {
  static_cast<C*>(data)->run();
  return 0;
}
#endif

template <typename Body>
void parallel_for(int items, int threads, const Body& body) {
  Claims<Body> claims{body, items};
  if (items <= 1) {
    claims.run();
    return;
  }
#if defined(AC_PARALLEL_TVM)
  (void)threads;
  TVMBackendParallelLaunch(&run_claims<Claims<Body>>, &claims, 0);
#elif defined(_OPENMP)
  const int n = std::min(items, threads > 0 ? threads : omp_get_max_threads());
#pragma omp parallel num_threads(n)
  claims.run();
#else
  (void)threads;
  claims.run();
#endif
}

// ---- the padded input and the panels ----

// off[k] of every kept row into the (padded) image [C][Hp][Wp]: c*Hp*Wp + i*dh*Wp + j*dw; used[c] = 1 where a kept
// row reads channel c.
void offsets(const ac_conv_shape& s, int hp, int wp, const int64_t* rows, int64_t* off, char* used) {
  std::fill_n(used, s.c, 0);
  const int64_t plane = static_cast<int64_t>(hp) * wp;
  for (int k = 0; k < s.k; ++k) {
    const int64_t tap = rows[k] / s.c, c = rows[k] % s.c;
    off[k] = c * plane + (tap / s.kw) * s.dh * wp + (tap % s.kw) * s.dw;
    used[c] = 1;
  }
}

// A run of output pixels on one output row: n pixels from panel column q on, reading image[off + src + i * sw].
struct Run {
  int q, n;
  int64_t src;
};

typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef uint8_t v16u8_u __attribute__((vector_size(16), aligned(1), may_alias));  // unaligned view

inline v16u8 load16(const int8_t* p) { return *reinterpret_cast<const v16u8_u*>(p); }

// out[4i + j] = (row j)[i] ^ kShift for 16 pixels i: unpack by byte, then by 16-bit pair (punpck on x86, zip on
// aarch64; GCC vector extensions).
inline void interleave4(v16u8 a, v16u8 b, v16u8 c, v16u8 d, uint8_t* out) {
  const v16u8 lo = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  const v16u8 hi = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const v16u8 lo2 = {0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23};
  const v16u8 hi2 = {8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31};
  const v16u8 ab_lo = __builtin_shuffle(a, b, lo), ab_hi = __builtin_shuffle(a, b, hi);
  const v16u8 cd_lo = __builtin_shuffle(c, d, lo), cd_hi = __builtin_shuffle(c, d, hi);
  const v16u8 shift = v16u8{} + static_cast<uint8_t>(kShift);
  *reinterpret_cast<v16u8_u*>(out) = __builtin_shuffle(ab_lo, cd_lo, lo2) ^ shift;  // out may be unaligned
  *reinterpret_cast<v16u8_u*>(out + 16) = __builtin_shuffle(ab_lo, cd_lo, hi2) ^ shift;
  *reinterpret_cast<v16u8_u*>(out + 32) = __builtin_shuffle(ab_hi, cd_hi, lo2) ^ shift;
  *reinterpret_cast<v16u8_u*>(out + 48) = __builtin_shuffle(ab_hi, cd_hi, hi2) ^ shift;
}

// Quads [q0, q1) of the panel [quads][nt][4] of pixel tile `tile`: byte j of pixel p in quad q is kept row 4q + j of
// that pixel, xor kShift. Rows past K repeat row 4q (their weights are zero); pixels past the image are zero.
void gather_panel(const ac_conv_shape& s, const int8_t* xp, int wp, const int64_t* off, int tile, int nt, int q0,
                  int q1, uint8_t* panel) {
  const int p0 = tile * nt, np = std::min(nt, s.oh * s.ow - p0);
  Run runs[NT];
  int count = 0;
  for (int p = p0; p < p0 + np; p += runs[count++].n) {
    const int oy = p / s.ow, ox = p % s.ow;
    runs[count] = {p - p0, std::min(s.ow - ox, p0 + np - p), static_cast<int64_t>(oy) * s.sh * wp + ox * s.sw};
  }
  for (int q = q0; q < q1; ++q) {
    const int8_t* src[KQ4];
    for (int j = 0; j < KQ4; ++j) {
      const int k = KQ4 * q + j;
      src[j] = xp + off[k < s.k ? k : KQ4 * q];
    }
    uint8_t* out = panel + static_cast<size_t>(q) * nt * KQ4;
    for (int r = 0; r < count; ++r) {
      const Run run = runs[r];
      int i = 0;
      if (s.sw == 1) {  // 16 pixels at a time: four 16-byte loads, interleaved by byte, then by 16-bit pair
        for (; i + 16 <= run.n; i += 16) {
          const int64_t o = run.src + i;
          interleave4(load16(src[0] + o), load16(src[1] + o), load16(src[2] + o), load16(src[3] + o),
                      out + (run.q + i) * KQ4);
        }
      }
      for (; i < run.n; ++i) {
        const int64_t o = run.src + static_cast<int64_t>(i) * s.sw;
        uint8_t* dst = out + (run.q + i) * KQ4;
        for (int j = 0; j < KQ4; ++j) dst[j] = static_cast<uint8_t>(src[j][o]) ^ kShift;
      }
    }
    std::memset(out + np * KQ4, 0, static_cast<size_t>(nt - np) * KQ4);
  }
}

// ---- micro-kernels: t[r][c] += sum over nq quads of a[q][r][0..3] . b[q][c][0..3], r < RB, c < V * PV ----
// a: packed weights at (block, first quad, row rb); b: the panel at (first quad, first pixel), nt pixels per quad;
// t: the int32 accumulator tile at (row, pixel), ldt ints per row.

#if defined(AC_I8_VNNI)
inline __m256i dot4(__m256i acc, __m256i u8, __m256i s8) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u8, s8);
#else
  return _mm256_dpbusd_avx_epi32(acc, u8, s8);
#endif
}

template <int V>
inline void micro_kernel(int nq, const wtype* a, const uint8_t* b, int nt, int32_t* t, int ldt) {
  __m256i acc[RB][V];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + r * ldt + v * PV));
  }
  const size_t ldb = static_cast<size_t>(nt) * KQ4;
  for (int q = 0; q < nq; ++q) {
    __m256i bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * ldb + v * 32));
    for (int r = 0; r < RB; ++r) {
      int32_t w;
      std::memcpy(&w, a + (q * MR + r) * KQ4, sizeof w);
      const __m256i wv = _mm256_set1_epi32(w);
      for (int v = 0; v < V; ++v) acc[r][v] = dot4(acc[r][v], bv[v], wv);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(t + r * ldt + v * PV), acc[r][v]);
  }
}

#elif defined(AC_I8_AVX2)
// Per 8 pixels two accumulators: vpmaddwd of 4 pixels x 4 rows (int16) with a channel's 4 weights gives each pixel
// two partial sums; they are added pairwise (vphaddd + a lane permute) at the end.
template <int V>
inline void micro_kernel(int nq, const wtype* a, const uint8_t* b, int nt, int32_t* t, int ldt) {
  __m256i acc[RB][V][2];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v][0] = acc[r][v][1] = _mm256_setzero_si256();
  }
  const size_t ldb = static_cast<size_t>(nt) * KQ4;
  for (int q = 0; q < nq; ++q) {
    __m256i lo[V], hi[V];
    for (int v = 0; v < V; ++v) {
      const uint8_t* bq = b + q * ldb + v * 32;
      lo[v] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq)));
      hi[v] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq + 16)));
    }
    for (int r = 0; r < RB; ++r) {
      int64_t w;
      std::memcpy(&w, a + (q * MR + r) * KQ4, sizeof w);
      const __m256i wv = _mm256_set1_epi64x(w);
      for (int v = 0; v < V; ++v) {
        acc[r][v][0] = _mm256_add_epi32(acc[r][v][0], _mm256_madd_epi16(lo[v], wv));
        acc[r][v][1] = _mm256_add_epi32(acc[r][v][1], _mm256_madd_epi16(hi[v], wv));
      }
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) {
      // hadd: [p0 p1 p4 p5 | p2 p3 p6 p7]; the permute puts the 64-bit lanes in pixel order
      const __m256i sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][v][0], acc[r][v][1]), 0xD8);
      __m256i* dst = reinterpret_cast<__m256i*>(t + r * ldt + v * PV);
      _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), sum));
    }
  }
}

#elif defined(AC_I8_SDOT)
template <int V>
inline void micro_kernel(int nq, const wtype* a, const uint8_t* b, int nt, int32_t* t, int ldt) {
  int32x4_t acc[RB][V];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = vld1q_s32(t + r * ldt + v * PV);
  }
  const size_t ldb = static_cast<size_t>(nt) * KQ4;
  for (int q = 0; q < nq; ++q) {
    const int8x16_t a0 = vld1q_s8(a + q * MR * KQ4), a1 = vld1q_s8(a + q * MR * KQ4 + 16);  // channels 0-3, 4-7
    for (int v = 0; v < V; ++v) {
      const int8x16_t bv = vld1q_s8(reinterpret_cast<const int8_t*>(b + q * ldb + v * 16));  // 4 pixels x 4 rows
      acc[0][v] = vdotq_laneq_s32(acc[0][v], bv, a0, 0);
      acc[1][v] = vdotq_laneq_s32(acc[1][v], bv, a0, 1);
      acc[2][v] = vdotq_laneq_s32(acc[2][v], bv, a0, 2);
      acc[3][v] = vdotq_laneq_s32(acc[3][v], bv, a0, 3);
      acc[4][v] = vdotq_laneq_s32(acc[4][v], bv, a1, 0);
      acc[5][v] = vdotq_laneq_s32(acc[5][v], bv, a1, 1);
      acc[6][v] = vdotq_laneq_s32(acc[6][v], bv, a1, 2);
      acc[7][v] = vdotq_laneq_s32(acc[7][v], bv, a1, 3);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) vst1q_s32(t + r * ldt + v * PV, acc[r][v]);
  }
}

#elif defined(AC_I8_NEON)
// Per 4 pixels two accumulators: smull / smull2 multiply 2 pixels x 4 rows each with the channel's 4 weights
// (int16 products, exact: |x * w| <= 16384), sadalp adds them pairwise into int32; addp folds the pairs at the end.
template <int V>
inline void micro_kernel(int nq, const wtype* a, const uint8_t* b, int nt, int32_t* t, int ldt) {
  int32x4_t acc[RB][V][2];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v][0] = acc[r][v][1] = vdupq_n_s32(0);
  }
  const size_t ldb = static_cast<size_t>(nt) * KQ4;
  for (int q = 0; q < nq; ++q) {
    int8x16_t bv[V];
    for (int v = 0; v < V; ++v) bv[v] = vld1q_s8(reinterpret_cast<const int8_t*>(b + q * ldb + v * 16));
    for (int r = 0; r < RB; ++r) {
      int32_t w;
      std::memcpy(&w, a + (q * MR + r) * KQ4, sizeof w);
      const int8x16_t wv = vreinterpretq_s8_s32(vdupq_n_s32(w));
      for (int v = 0; v < V; ++v) {
        acc[r][v][0] = vpadalq_s16(acc[r][v][0], vmull_s8(vget_low_s8(bv[v]), vget_low_s8(wv)));
        acc[r][v][1] = vpadalq_s16(acc[r][v][1], vmull_high_s8(bv[v], wv));
      }
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) {
      int32_t* dst = t + r * ldt + v * PV;
      vst1q_s32(dst, vaddq_s32(vld1q_s32(dst), vpaddq_s32(acc[r][v][0], acc[r][v][1])));
    }
  }
}

#else
template <int V>
inline void micro_kernel(int nq, const wtype* a, const uint8_t* b, int nt, int32_t* t, int ldt) {
  int32_t acc[RB][V * PV] = {};
  const size_t ldb = static_cast<size_t>(nt) * KQ4;
  for (int q = 0; q < nq; ++q) {
    const int8_t* bq = reinterpret_cast<const int8_t*>(b + q * ldb);
    for (int r = 0; r < RB; ++r) {
      const wtype* w = a + (q * MR + r) * KQ4;
      for (int p = 0; p < V * PV; ++p) {
        acc[r][p] += w[0] * bq[p * 4] + w[1] * bq[p * 4 + 1] + w[2] * bq[p * 4 + 2] + w[3] * bq[p * 4 + 3];
      }
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int p = 0; p < V * PV; ++p) t[r * ldt + p] += acc[r][p];
  }
}
#endif

// Pixels [c, nt) of RB rows of the tile: full-width register tiles, then narrower ones (nt is a multiple of PV).
template <int V>
inline void sweep(int nq, const wtype* a, const uint8_t* b, int c, int nt, int32_t* t) {
  for (; c + V * PV <= nt; c += V * PV) micro_kernel<V>(nq, a, b + c * KQ4, nt, t + c, nt);
  if constexpr (V > 1) sweep<V - 1>(nq, a, b, c, nt, t);
}

// ---- requantization: see the header for the exact formula ----

struct Requant {
  const ac_conv_shape& s;
  const ac_conv_int8_quant& q;
  const wtype* wpack;       // [ceil(F/MR)][quads][MR][4]
  const int32_t* colsum;    // [ceil(F/MR) * MR]: sum_k w[f, k]
  const int32_t* bias;      // [F] or null
  int32_t corr;             // zx (+ 128 where the panel holds x + 128)

  // y[f][p0 + p] for p < np, channel rows r < nf of the tile t (nt ints per row) from channel f0 on.
  void store(const int32_t* t, int nt, int f0, int nf, int p0, int np, const int8_t* res, int8_t* y) const {
    const int pixels = s.oh * s.ow, zy = q.y_zero;
    // clamp first: the bounds are integers, so clamping before the rounding equals clamping after it
    const double lo = (s.relu ? zy : -128) - zy, hi = 127 - zy;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52: (v + magic) - magic rounds |v| < 2^51 half to even
    const double mr = q.res_multiplier;
    const int zr = q.res_zero;
    for (int r = 0; r < nf; ++r) {
      const int f = f0 + r;
      // acc = t + bias - corr * colsum, modulo 2^32: exact whenever acc itself fits in int32 (the header's limits)
      const uint32_t add = static_cast<uint32_t>(bias ? bias[f] : 0) -
                           static_cast<uint32_t>(corr) * static_cast<uint32_t>(colsum[f]);
      const double m = q.multiplier[f];
      const int32_t* src = t + static_cast<size_t>(r) * nt;
      const size_t at = static_cast<size_t>(f) * pixels + p0;
      int8_t* dst = y + at;
      if (res) {
        const int8_t* rs = res + at;
        for (int p = 0; p < np; ++p) {
          const float a = static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(src[p]) + add));
          double v = static_cast<double>(a) * m + static_cast<double>(rs[p] - zr) * mr;
          v = std::min(std::max(v, lo), hi);
          dst[p] = static_cast<int8_t>(static_cast<int>((v + magic) - magic) + zy);
        }
      } else {
        for (int p = 0; p < np; ++p) {
          const float a = static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(src[p]) + add));
          double v = static_cast<double>(a) * m;
          v = std::min(std::max(v, lo), hi);
          dst[p] = static_cast<int8_t>(static_cast<int>((v + magic) - magic) + zy);
        }
      }
    }
  }
};

// Output channels [f_chunk * OC, +OC) of pixel tile `tile`, from its panel.
void gemm_tile(const ac_conv_shape& s, const Requant& rq, const uint8_t* panel, int nt, int tile, int f_chunk,
               const int8_t* res, int8_t* y) {
  thread_local std::vector<int32_t> acc_tile;
  acc_tile.resize(static_cast<size_t>(OC) * nt);
  int32_t* t = acc_tile.data();
  const int nq_all = quads(s.k), f0 = f_chunk * OC, nf = std::min(OC, s.f - f0), mf = round_up(nf, MR);
  std::fill_n(t, static_cast<size_t>(mf) * nt, 0);
  for (int k0 = 0; k0 < nq_all; k0 += KQ) {
    const int nq = std::min(KQ, nq_all - k0);
    for (int r0 = 0; r0 < mf; r0 += MR) {
      const wtype* a = rq.wpack + (static_cast<size_t>((f0 + r0) / MR) * nq_all + k0) * MR * KQ4;
      const uint8_t* b = panel + static_cast<size_t>(k0) * nt * KQ4;
      for (int rb = 0; rb < MR; rb += RB) sweep<WIDE>(nq, a + rb * KQ4, b, 0, nt, t + (r0 + rb) * nt);
    }
  }
  const int p0 = tile * nt;
  rq.store(t, nt, f0, nf, p0, std::min(nt, s.oh * s.ow - p0), res, y);
}

int check(const ac_conv_shape& s, const ac_conv_int8_quant& q, const int64_t* rows) {
  if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.f < 1 || s.k < 1) return -1;
  if (s.kh < 1 || s.kw < 1 || s.sh < 1 || s.sw < 1 || s.dh < 1 || s.dw < 1 || s.ph < 0 || s.pw < 0) return -2;
  if (s.oh != (s.h + 2 * s.ph - s.dh * (s.kh - 1) - 1) / s.sh + 1) return -3;
  if (s.ow != (s.w + 2 * s.pw - s.dw * (s.kw - 1) - 1) / s.sw + 1 || s.oh < 1 || s.ow < 1) return -3;
  const int64_t total = static_cast<int64_t>(s.c) * s.kh * s.kw;
  for (int k = 0; k < s.k; ++k) {
    if (rows[k] < 0 || rows[k] >= total || (k > 0 && rows[k] <= rows[k - 1])) return -4;
  }
  if (s.k > AC_CONV_INT8_MAX_K) return -5;
  for (const int32_t z : {q.x_zero, q.y_zero, q.res_zero}) {
    if (z < -128 || z > 127) return -6;
  }
  for (int f = 0; f < s.f; ++f) {
    if (!std::isfinite(q.multiplier[f]) || !(q.multiplier[f] > 0.0f)) return -7;
  }
  return 0;
}

}  // namespace

extern "C" size_t ac_conv_int8_packed_size(int f, int k) {
  const size_t channels = static_cast<size_t>(round_up(f, MR));
  return channels * quads(k) * KQ4 * sizeof(wtype) + channels * sizeof(int32_t);
}

extern "C" void ac_conv_int8_pack_weights(int f, int k, const int8_t* w, void* packed) {
  const int nq = quads(k), channels = round_up(f, MR);
  std::memset(packed, 0, ac_conv_int8_packed_size(f, k));
  wtype* out = static_cast<wtype*>(packed);
  int32_t* colsum = reinterpret_cast<int32_t*>(out + static_cast<size_t>(channels) * nq * KQ4);
  for (int o = 0; o < f; ++o) {
    wtype* dst = out + static_cast<size_t>(o / MR) * nq * MR * KQ4 + (o % MR) * KQ4;
    int32_t sum = 0;
    for (int j = 0; j < k; ++j) {
      const int8_t v = w[static_cast<size_t>(o) * k + j];
      dst[static_cast<size_t>(j / KQ4) * MR * KQ4 + j % KQ4] = v;
      sum += v;
    }
    colsum[o] = sum;
  }
}

extern "C" int ac_compact_conv2d_int8(const ac_conv_shape* s, const ac_conv_int8_quant* q, const int8_t* x,
                                      const void* packed, const int64_t* rows, const int32_t* bias,
                                      const int8_t* residual, int8_t* y, int threads) {
  if (!s || !q || !q->multiplier || !x || !packed || !rows || !y) return -8;
  if (const int err = check(*s, *q, rows)) return err;
  if (residual && (!std::isfinite(q->res_multiplier) || q->res_multiplier < 0.0f)) return -7;
  const int nq = quads(s->k), channels = round_up(s->f, MR);
  const wtype* wpack = static_cast<const wtype*>(packed);
  const Requant rq{*s, *q, wpack, reinterpret_cast<const int32_t*>(wpack + static_cast<size_t>(channels) * nq * KQ4),
                   bias, q->x_zero + static_cast<int32_t>(kShift)};
  const bool copy = s->ph > 0 || s->pw > 0;  // unpadded convs read the input itself
  const int hp = s->h + 2 * s->ph, wp = s->w + 2 * s->pw;
  const size_t plane = static_cast<size_t>(hp) * wp;
  thread_local std::vector<int8_t> padded;
  thread_local std::vector<int64_t> off;
  thread_local std::vector<char> used;
  thread_local std::vector<uint8_t> panels;
  if (copy) padded.resize(s->c * plane);
  off.resize(s->k);
  used.resize(s->c);
  offsets(*s, hp, wp, rows, off.data(), used.data());
  const int pixels = s->oh * s->ow, nt = std::min(NT, round_up(pixels, PV));
  const int tiles_p = (pixels + nt - 1) / nt, chunks_f = (s->f + OC - 1) / OC;
  const size_t panel = static_cast<size_t>(nq) * nt * KQ4;
  int8_t* const pad_buf = padded.data();  // the lambdas run on other threads: they must not name the thread_locals
  const int64_t* const off_buf = off.data();
  const char* const used_buf = used.data();
  for (int n = 0; n < s->n; ++n) {
    const int8_t* xn = x + static_cast<size_t>(n) * s->c * s->h * s->w;
    const size_t image = static_cast<size_t>(n) * s->f * pixels;
    const int8_t* res = residual ? residual + image : nullptr;
    int8_t* yn = y + image;
    if (copy) {
      parallel_for(s->c, threads, [&](int c) {
        if (!used_buf[c]) return;
        int8_t* dst = pad_buf + c * plane;
        std::memset(dst, static_cast<int8_t>(q->x_zero), plane);
        for (int iy = 0; iy < s->h; ++iy) {
          std::memcpy(dst + static_cast<size_t>(iy + s->ph) * wp + s->pw, xn + (static_cast<size_t>(c) * s->h + iy) * s->w,
                      s->w);
        }
      });
    }
    const int8_t* xp = copy ? pad_buf : xn;
    if (tiles_p >= kFusedTiles) {  // enough pixel tiles to share out: each gathers its own panel, hot in cache
      parallel_for(tiles_p, threads, [&](int tile) {
        thread_local std::vector<uint8_t> own;
        own.resize(panel);
        gather_panel(*s, xp, wp, off_buf, tile, nt, 0, nq, own.data());
        for (int f_chunk = 0; f_chunk < chunks_f; ++f_chunk) gemm_tile(*s, rq, own.data(), nt, tile, f_chunk, res, yn);
      });
      continue;
    }
    // few pixels (deep layers): gather every panel first, then share out channel chunks too
    panels.resize(panel * tiles_p);
    uint8_t* const buf = panels.data();
    const int q_chunks = (nq + kGatherQuads - 1) / kGatherQuads;
    parallel_for(tiles_p * q_chunks, threads, [&](int item) {
      const int tile = item / q_chunks, q0 = (item % q_chunks) * kGatherQuads;
      gather_panel(*s, xp, wp, off_buf, tile, nt, q0, std::min(nq, q0 + kGatherQuads), buf + tile * panel);
    });
    parallel_for(tiles_p * chunks_f, threads, [&](int item) {
      const int tile = item % tiles_p;
      gemm_tile(*s, rq, buf + tile * panel, nt, tile, item / tiles_p, res, yn);
    });
  }
  return 0;
}

extern "C" const char* ac_conv_int8_error(int code) {
  switch (code) {
    case 0: return "ok";
    case -1: return "empty tensor: n, c, h, w, f and k must all be >= 1";
    case -2: return "kernel, stride and dilation must be >= 1 and padding >= 0";
    case -3: return "output size does not follow from input size, kernel, stride, padding and dilation";
    case -4: return "rows must be ascending, unique and inside [0, C*KH*KW)";
    case -5: return "more than 65536 kept rows: the int32 sums could overflow";
    case -6: return "zero points must be inside [-128, 127]";
    case -7: return "multipliers must be finite and > 0 (the residual's >= 0)";
    case -8: return "a required pointer is NULL";
    default: return "unknown error";
  }
}

extern "C" const char* ac_conv_int8_path(void) { return kPath; }
