// Convolution over the kept im2col rows (see include/ac/compact_conv.h for the layout).
//
// Per image: copy the input once with zero borders (the channels kept rows read; convs without padding read the
// input itself), in pieces the threads claim at the start of the conv's one parallel launch. Then one of three
// paths:
// - pixel-row (AVX2 builds, stride 1 across, output rows of whole 8-pixel vectors, at most 512 kept rows):
//   registers hold 6 output channels x 2 vectors of 8 adjacent output pixels; per kept row two vector loads from
//   the padded input and a broadcast weight per channel; stored straight into y (conv_pixel_rows);
// - direct (the other convs of AVX2 builds): registers hold 6 output pixels x 16 output channels; per kept row the
//   6 input values are broadcast straight from the padded input and multiplied with two 8-channel weight vectors,
//   stored through an 8 x 8 transpose (conv_direct). Both keep the whole K sum in registers, gather nothing, and
//   skip the kernel rows that read only the zero border above or below the input (KeptRows::inside);
// - gather-GEMM (every other build): per tile of NT output pixels, gather the kept im2col rows of those
//   pixels into a contiguous panel [K][NT] (a copy per output row the tile touches: no bounds checks, no divisions
//   per row, faster than gathering from the unpadded input; a [K][P] matrix instead would put every row in the
//   same L1 set at a 4 KiB stride), then
//   multiply the pre-packed weights with it in blocks of OC channels, K in blocks of KC, by an MR x W
//   register-blocked micro-kernel. With many tiles each thread gathers its own panels (hot in cache); deep layers
//   with few pixels gather every panel first and share out (tile, channel block) pairs. Dense-enough stride-1 convs
//   on wide maps gather nothing (implicit GEMM, see conv_implicit).
// All add bias, residual and ReLU when a tile is stored, and use GCC/Clang vector extensions: they compile to NEON
// fmla on aarch64 and to AVX FMAs on x86, from one source.
// Work runs in parallel on OpenMP threads (standalone library) or on TVM's thread pool (AC_PARALLEL_TVM, when the
// kernel is linked into a compiled model), so the kernel never competes with the runtime's own workers.
#include "ac/compact_conv.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#if defined(AC_PARALLEL_TVM)
#include <tvm/runtime/c_backend_api.h>
#elif defined(_OPENMP)
#include <omp.h>
#endif

namespace {

// R x W register tile (R of the MR packed channels, W = V * NR pixels): R * V accumulators plus the V B vectors and
// a broadcast must fit the vector registers, and the FMAs must outnumber the loads (each k step loads V B vectors
// and broadcasts R weights). MR is fixed: it is the packed-weight layout, shared by every build. R and the widest V
// follow the ISA: AVX-512 8 x 32 (16 zmm accumulators); AVX2 4 x 24 (12 ymm accumulators: a broadcast per 3 FMAs,
// where 8 x 8 has one per FMA); NEON and portable 8 x 8. Pixels left over past the last full W take narrower tiles
// (V - 1, ..., 1). Measurements behind these choices: kernels/README.md.
constexpr int MR = AC_CONV_MR;
#if defined(__AVX512F__)
constexpr int NR = 16, RB = 8, WIDE = 2;
#elif defined(__AVX2__)
constexpr int NR = 8, RB = 4, WIDE = 3;
#else
constexpr int NR = 8, RB = 8, WIDE = 1;
#endif
static_assert(MR % RB == 0, "a register tile takes whole rows of a packed block");
constexpr int NT = 64;      // output pixels per tile (a multiple of NR)
constexpr int OC = 8 * MR;  // output channels per tile
constexpr int KC = 256;     // kept rows per K block (the weight block KC x MR stays in L1)
constexpr int kFusedTiles = 8;    // from this many pixel tiles on, each tile gathers its own panel
constexpr int kGatherRows = 128;  // otherwise panels are gathered in parallel chunks of this many rows

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// ---- parallel loop: OpenMP threads (standalone library) or TVM's thread pool (inside a compiled model) ----

// fn(i) for every i < items, on the pool's threads. Each thread runs its own contiguous share first (cheaper than
// handing out items one by one from a shared counter), then takes what is left of the other shares, so a thread
// that starts late (a sleeping worker) or runs slow (another process on its core) does not hold the launch up.
// With `pre`, the threads first share out the pieces of (*pre)(piece, pieces) -- the padded copy -- and wait until
// every piece is done (not for every thread: a late one finds the copy finished); one launch per conv, not two,
// because TVM's workers sleep between launches. Measurements: kernels/README.md.
struct NoPrologue {
  void operator()(int, int) const {}
};

template <typename Fn, typename Pre>
class Shares {
 public:
  Shares(const Fn& fn, const Pre* pre, int items) : fn_(fn), pre_(pre), items_(items) {}

  void run(int task, int tasks) {
    if (pre_) prologue(tasks);
    const int shares = std::min(tasks, kMaxShares);
    for (int j = 0; j < shares; ++j) {
      const int share = (task + j) % shares;
      const int begin = static_cast<int>(int64_t{items_} * share / shares);
      const int end = static_cast<int>(int64_t{items_} * (share + 1) / shares);
      std::atomic<int>& next = claimed_[share].value;
      for (int i; (i = begin + next.fetch_add(1, std::memory_order_relaxed)) < end;) fn_(i);
    }
  }

 private:
  static constexpr int kMaxShares = 16;  // more threads than this share the shares
  static constexpr int kPiecesPerTask = 2;
  struct alignas(64) Counter {
    std::atomic<int> value{0};
  };

  void prologue(int tasks) {
    const int pieces = kPiecesPerTask * tasks;
    for (int p; (p = copy_next_.value.fetch_add(1, std::memory_order_relaxed)) < pieces;) {
      (*pre_)(p, pieces);
      copy_done_.value.fetch_add(1, std::memory_order_release);
    }
    while (copy_done_.value.load(std::memory_order_acquire) < pieces) pause();
  }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  const Fn& fn_;
  const Pre* pre_;
  const int items_;
  Counter claimed_[kMaxShares];
  Counter copy_next_, copy_done_;
};

#if defined(AC_PARALLEL_TVM)
template <typename S>
int run_task(int task, TVMParallelGroupEnv* env, void* data) {
  static_cast<S*>(data)->run(task, env->num_task);
  return 0;
}
#endif

template <typename Fn, typename Pre = NoPrologue>
void parallel_for(int items, int threads, const Fn& fn, const Pre* pre = nullptr) {
  Shares<Fn, Pre> shares(fn, pre, items);
#if defined(AC_PARALLEL_TVM)
  (void)threads;
  TVMBackendParallelLaunch(&run_task<Shares<Fn, Pre>>, &shares, 0);
#elif defined(_OPENMP)
  const int n = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(n)
  shares.run(omp_get_thread_num(), omp_get_num_threads());
#else
  (void)threads;
  shares.run(0, 1);
#endif
}

// ---- phase 1: the zero-padded input, and the kept im2col rows gathered from it ----

// One image copied to [C][Hp][Wp] with zero borders (plus `tail` zeros): the kept row (c, i, j) of output pixel
// (oy, ox) is then padded[off + oy*sh*Wp + ox*sw] with off = c*Hp*Wp + i*dh*Wp + j*dw -- no bounds checks, no
// divisions per row. Planes of channels that no kept row reads are neither zeroed nor copied.
struct Padded {
  int hp, wp;
  size_t plane, size;
  Padded(const ac_conv_shape& s, size_t tail)
      : hp(s.h + 2 * s.ph), wp(s.w + 2 * s.pw), plane(static_cast<size_t>(hp) * wp), size(s.c * plane + tail) {}

  // off[k] of every kept row; used[c] = 1 where some kept row reads channel c; tap_start[t] the first row of tap t
  // or later (KH * KW + 1 entries). The rows ascend, so this walks the taps instead of dividing per row.
  void offsets(const ac_conv_shape& s, const int64_t* rows, int64_t* off, char* used, int* tap_start) const {
    std::fill_n(used, s.c, 0);
    int tap = 0;
    int64_t tap_row = 0, tap_off = 0;  // the tap of row k, its first row and its offset (i*dh*Wp + j*dw)
    tap_start[0] = 0;
    for (int k = 0; k < s.k; ++k) {
      while (rows[k] >= tap_row + s.c) {
        tap_start[++tap] = k;
        tap_row += s.c;
        tap_off = (tap / s.kw) * s.dh * wp + (tap % s.kw) * s.dw;
      }
      const int64_t c = rows[k] - tap_row;
      off[k] = c * static_cast<int64_t>(plane) + tap_off;
      used[c] = 1;
    }
    std::fill(tap_start + tap + 1, tap_start + s.kh * s.kw + 1, s.k);
  }

  // Channels [C * part / parts, C * (part + 1) / parts); the last part also zeroes the tail.
  void fill(const ac_conv_shape& s, const float* xn, const char* used, float* xp, int part, int parts) const {
    const int c_end = static_cast<int>(int64_t{s.c} * (part + 1) / parts);
    for (int c = static_cast<int>(int64_t{s.c} * part / parts); c < c_end; ++c) {
      if (!used[c]) continue;
      float* dst = xp + c * plane;
      std::fill_n(dst, plane, 0.0f);
      for (int iy = 0; iy < s.h; ++iy) {
        std::memcpy(dst + (iy + s.ph) * wp + s.pw, xn + (static_cast<size_t>(c) * s.h + iy) * s.w, sizeof(float) * s.w);
      }
    }
    if (part == parts - 1) std::fill(xp + s.c * plane, xp + size, 0.0f);
  }
};

// The padded copy of one image as a launch's prologue (see parallel_for).
struct Fill {
  const Padded& pad;
  const ac_conv_shape& s;
  const float* x;
  const char* used;
  float* xp;
  void operator()(int part, int parts) const { pad.fill(s, x, used, xp, part, parts); }
};

// The kept rows' offsets into the padded input and where each tap's rows start (rows are tap-major, so a kernel row
// kh is one contiguous range of them).
struct KeptRows {
  const int64_t* off;
  const int* tap_start;

  // [k0, k1): the rows that a tile of output rows oy_min..oy_max reads inside the input. The kernel rows that read
  // the zero border above (below) the input for every output row of the tile are skipped: at 8 x 8 a 3 x 3 conv's top
  // and bottom output rows read a third of their taps from the border.
  std::pair<int, int> inside(const ac_conv_shape& s, int oy_min, int oy_max) const {
    const int top = s.ph - oy_max * s.sh;                // kernel row kh reads inside from kh * dh >= top on
    const int bottom = s.h - 1 + s.ph - oy_min * s.sh;  // ... up to kh * dh <= bottom
    const int kh0 = top > 0 ? (top + s.dh - 1) / s.dh : 0;
    const int kh1 = bottom < 0 ? -1 : std::min(s.kh - 1, bottom / s.dh);
    if (kh0 > kh1) return {0, 0};
    return {tap_start[kh0 * s.kw], tap_start[(kh1 + 1) * s.kw]};
  }
};

// A run of output pixels on one output row: n pixels from panel column q on, reading padded[off + src + i * sw].
struct Run {
  int q, n, src;
};

// Rows [k0, k1) of the panel [K][nt] of pixel tile `tile`: per row, one copy per output row the tile touches.
void gather_panel(const ac_conv_shape& s, const float* xp, int wp, const int64_t* off, int tile, int nt, int k0,
                  int k1, float* panel) {
  const int p0 = tile * nt, np = std::min(nt, s.oh * s.ow - p0);
  Run runs[NT];  // every run holds at least one of the np <= NT pixels
  int count = 0;
  for (int p = p0; p < p0 + np; p += runs[count++].n) {
    const int oy = p / s.ow, ox = p % s.ow;
    runs[count] = {p - p0, std::min(s.ow - ox, p0 + np - p), oy * s.sh * wp + ox * s.sw};
  }
  for (int k = k0; k < k1; ++k) {
    const float* src = xp + off[k];
    float* out = panel + static_cast<size_t>(k) * nt;
    for (int r = 0; r < count; ++r) {
      const Run run = runs[r];
      if (s.sw == 1) {
        for (int i = 0; i < run.n; ++i) out[run.q + i] = src[run.src + i];
      } else {
        for (int i = 0; i < run.n; ++i) out[run.q + i] = src[run.src + i * s.sw];
      }
    }
    std::fill(out + np, out + nt, 0.0f);
  }
}

// ---- phase 2: y[F, P] = act(bias + wpack . cols), in tiles of OC channels x NT pixels ----

typedef float vec_t __attribute__((vector_size(NR * sizeof(float))));  // one native-width vector group
typedef float vec_u __attribute__((vector_size(NR * sizeof(float)), aligned(4), may_alias));  // unaligned view

inline vec_t load(const float* p) { return *reinterpret_cast<const vec_u*>(p); }
inline void store(float* p, vec_t v) { *reinterpret_cast<vec_u*>(p) = v; }

// Where the micro-kernel reads row k of B (V*NR consecutive floats): a gathered panel, or -- for stride-1 convs --
// the zero-padded input itself, row k starting at a fixed offset (implicit GEMM: nothing is gathered).
struct PanelRows {
  const float* b;
  int ld;
  const float* row(int k) const { return b + static_cast<size_t>(k) * ld; }
  PanelRows at(int k0, int q0) const { return {b + static_cast<size_t>(k0) * ld + q0, ld}; }
};

struct ShiftedRows {
  const float* base;    // padded input + first virtual pixel
  const int64_t* off;   // per kept row: c*Hp*Wp + i*dh*Wp + j*dw
  const float* row(int k) const { return base + off[k]; }
  ShiftedRows at(int k0, int q0) const { return {base + q0, off + k0}; }
};

// t[r][0..V*NR) += sum_k a[k*MR + r] * B(k)[0..V*NR) for r < R: V vectors of NR floats per row, as separate
// accumulators (a single 2*NR-float vector type, or memcpy into the array, makes GCC keep them in memory).
// `next` is the weight panel the tile needs after this one: fetched a line per k step (packed weights are read
// once per tile, from memory in deep layers).
template <int R, int V, typename Rows>
inline void micro_kernel(int kc, const float* a, Rows b, float* t, int ldt, const float* next) {
  vec_t acc[R][V];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = load(t + r * ldt + v * NR);
  }
  for (int k = 0; k < kc; ++k) {
    const float* row = b.row(k);
    __builtin_prefetch(next + k * MR);
    vec_t bv[V];
    for (int v = 0; v < V; ++v) bv[v] = load(row + v * NR);
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < V; ++v) acc[r][v] += a[k * MR + r] * bv[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) store(t + r * ldt + v * NR, acc[r][v]);
  }
}

// Pixels [c, nt) of R rows of the accumulator tile: full-width register tiles, then narrower ones for the rest.
template <int V, typename Rows>
inline void sweep(int kc, const float* a, Rows b, int c, float* t, int nt, const float* next) {
  for (; c + V * NR <= nt; c += V * NR) micro_kernel<RB, V>(kc, a, b.at(0, c), t + c, nt, next);
  if constexpr (V > 1) sweep<V - 1>(kc, a, b, c, t, nt, next);
}

// Output pixels are addressed as virtual pixels q = oy * wq + ox of a grid wq wide (wq = OW for gathered panels;
// wq = the padded input width for the implicit path, whose columns ox >= OW are computed and dropped).
struct Gemm {
  const ac_conv_shape& s;
  const float* wpack;  // [ceil(F/MR)][K][MR]
  const float* bias;   // [F] or null
  const float* res;    // [F][OH*OW] added before the ReLU, or null
  float* y;            // [F][OH*OW]
  int nt, wq;

  // Output channels [f_chunk * OC, +OC) of virtual pixels [q0, q0 + nt), reading B from `rows`.
  template <typename Rows>
  void tile(int q0, int f_chunk, Rows rows) const {
    thread_local std::vector<float> acc_tile;
    acc_tile.resize(static_cast<size_t>(OC) * nt);
    float* t = acc_tile.data();
    const int f0 = f_chunk * OC, nf = std::min(OC, s.f - f0), mf = round_up(nf, MR);
    for (int r = 0; r < mf; ++r) std::fill_n(t + r * nt, nt, (bias && r < nf) ? bias[f0 + r] : 0.0f);
    for (int k0 = 0; k0 < s.k; k0 += KC) {
      const int kc = std::min(KC, s.k - k0);
      for (int r0 = 0; r0 < mf; r0 += MR) {
        const float* a = wpack + (static_cast<size_t>((f0 + r0) / MR) * s.k + k0) * MR;
        const float* next = r0 + MR < mf ? a + static_cast<size_t>(s.k) * MR : a;
        for (int rb = 0; rb < MR; rb += RB) sweep<WIDE>(kc, a + rb, rows.at(k0, 0), 0, t + (r0 + rb) * nt, nt, next);
      }
    }
    store_tile(q0, f0, nf, t);
  }

  void store_tile(int q0, int f0, int nf, const float* t) const {
    const int q_end = std::min(q0 + nt, s.oh * wq);
    for (int q = q0; q < q_end;) {  // one output row segment at a time
      const int oy = q / wq, ox = q % wq, span = std::min(wq - ox, q_end - q), valid = std::min(span, s.ow - ox);
      for (int r = 0; r < nf && valid > 0; ++r) {
        const float* src = t + r * nt + (q - q0);
        const size_t at = static_cast<size_t>(f0 + r) * s.oh * s.ow + oy * s.ow + ox;
        for (int i = 0; i < valid; ++i) {
          const float v = res ? src[i] + res[at + i] : src[i];
          y[at + i] = (s.relu && v < 0.0f) ? 0.0f : v;
        }
      }
      q += span;
    }
  }
};

// ---- direct path: y[F, P] accumulated in registers, read straight from the padded input ----
//
// Transposed register tile: 8 output channels per vector (one packed weight block, loaded from memory) times P
// output pixels (one input value broadcast each, xp[off[k] + pixel offset]), so nothing is gathered and the whole
// K sum stays in registers; a tile is stored once, transposed, with bias and ReLU. The P pixels of a kept row are
// adjacent floats of one padded plane (stride 1). No channels-last copy of the input (which would make consecutive
// rows of one tap adjacent too): its transposing copy costs more than it saves. Where this path runs: kDirectPays.
typedef float vec8 __attribute__((vector_size(MR * sizeof(float))));
typedef float vec8_u __attribute__((vector_size(MR * sizeof(float)), aligned(4), may_alias));
inline vec8 load8(const float* p) { return *reinterpret_cast<const vec8_u*>(p); }

constexpr int DP = 6, DJ = 2;  // AVX2: 6 pixels x 2 blocks = 12 accumulators (+1 broadcast) of the 16 ymm

// out[p][j*8 + o] = bias[j*8 + o] + sum_k w_j[k][o] * xp[off[k] + pix[p]] for P pixels and J packed blocks, k over
// [k0, k1) (the rows left out read only zeros for these pixels). All in one pass, K not blocked: the weight and
// input streams prefetch well.
template <int P, int J>
void direct_kernel(int k0, int k1, const float* w, size_t ldw, const float* xp, const int64_t* off,
                   const int64_t* pix, const float* bias, float* out) {
  vec8 acc[P][J];
  for (int j = 0; j < J; ++j) {
    const vec8 b = load8(bias + j * MR);
    for (int p = 0; p < P; ++p) acc[p][j] = b;
  }
  const float* xq[P];  // one base per pixel: a broadcast is then one [base + row offset] load
  for (int p = 0; p < P; ++p) xq[p] = xp + pix[p];
  for (int k = k0; k < k1; ++k) {
    const int64_t o = off[k];
    const float* wk = w + static_cast<size_t>(k) * MR;
    for (int p = 0; p < P; ++p) {
      const float v = xq[p][o];
      for (int j = 0; j < J; ++j) acc[p][j] += v * load8(wk + j * ldw);
    }
  }
  for (int p = 0; p < P; ++p) {
    for (int j = 0; j < J; ++j) *reinterpret_cast<vec8_u*>(out + (p * DJ + j) * MR) = acc[p][j];
  }
}

using DirectFn = void (*)(int, int, const float*, size_t, const float*, const int64_t*, const int64_t*, const float*,
                          float*);

template <int J, int... P>
constexpr std::array<DirectFn, DP> direct_row(std::integer_sequence<int, P...>) {
  return {&direct_kernel<P + 1, J>...};
}

// kDirect[j - 1][p - 1]: the kernel for p pixels and j blocks (the tails of a layer take the smaller ones)
constexpr std::array<std::array<DirectFn, DP>, DJ> kDirect = {direct_row<1>(std::make_integer_sequence<int, DP>{}),
                                                               direct_row<2>(std::make_integer_sequence<int, DP>{})};

constexpr int kDirectChunk = 8 * DP;  // output pixels per parallel work item

// y[o][q] = act(part[q][o] + res[o][q]) for q < nq, o < nf (res may be null): 8 x 8 blocks transposed in
// registers, the ragged edges one by one.
inline vec8 shuffle(vec8 a, vec8 b, __attribute__((vector_size(MR * sizeof(int)))) int mask) {
  return __builtin_shuffle(a, b, mask);
}

void transpose8(vec8 r[8]) {
  typedef int mask8 __attribute__((vector_size(MR * sizeof(int))));
  const mask8 lo{0, 8, 1, 9, 4, 12, 5, 13}, hi{2, 10, 3, 11, 6, 14, 7, 15};
  const mask8 lo2{0, 1, 8, 9, 4, 5, 12, 13}, hi2{2, 3, 10, 11, 6, 7, 14, 15};
  const mask8 lo4{0, 1, 2, 3, 8, 9, 10, 11}, hi4{4, 5, 6, 7, 12, 13, 14, 15};
  vec8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) t[i] = shuffle(r[i], r[i + 1], lo), t[i + 1] = shuffle(r[i], r[i + 1], hi);
  for (int i = 0; i < 8; i += 4) {
    u[i] = shuffle(t[i], t[i + 2], lo2), u[i + 1] = shuffle(t[i], t[i + 2], hi2);
    u[i + 2] = shuffle(t[i + 1], t[i + 3], lo2), u[i + 3] = shuffle(t[i + 1], t[i + 3], hi2);
  }
  for (int i = 0; i < 4; ++i) r[i] = shuffle(u[i], u[i + 4], lo4), r[i + 4] = shuffle(u[i], u[i + 4], hi4);
}

void store_transposed(const float (*part)[DJ * MR], int nq, int nf, bool relu, const float* res, float* y,
                      int pitch) {
  const vec8 zero{};
  for (int o0 = 0; o0 < nf; o0 += MR) {
    int q0 = 0;
    for (; q0 + MR <= nq && o0 + MR <= nf; q0 += MR) {
      vec8 r[MR];
      for (int i = 0; i < MR; ++i) r[i] = load8(part[q0 + i] + o0);
      transpose8(r);
      for (int i = 0; i < MR; ++i) {
        const size_t at = static_cast<size_t>(o0 + i) * pitch + q0;
        const vec8 v = res ? r[i] + load8(res + at) : r[i];
        *reinterpret_cast<vec8_u*>(y + at) = relu ? (v < zero ? zero : v) : v;  // NaN stays, as in torch
      }
    }
    for (int o = o0; o < std::min(nf, o0 + MR); ++o) {
      for (int q = q0; q < nq; ++q) {
        const size_t at = static_cast<size_t>(o) * pitch + q;
        const float v = res ? part[q][o] + res[at] : part[q][o];
        y[at] = (relu && v < 0.0f) ? 0.0f : v;
      }
    }
  }
}

void conv_direct(const ac_conv_shape& s, int wp, const float* xp, const KeptRows& kept, const float* wpack,
                 const float* bias, const float* res, float* y, int threads, const Fill* fill) {
  const int blocks = (s.f + MR - 1) / MR, groups = (blocks + DJ - 1) / DJ, pixels = s.oh * s.ow;
  const int chunks = (pixels + kDirectChunk - 1) / kDirectChunk;
  parallel_for(groups * chunks, threads, [&](int item) {
    const int g = item / chunks, q_begin = (item % chunks) * kDirectChunk;
    const int nq = std::min(pixels - q_begin, kDirectChunk), b0 = g * DJ, nb = std::min(DJ, blocks - b0);
    const int f0 = b0 * MR, nf = std::min(nb * MR, s.f - f0);
    const float* w = wpack + static_cast<size_t>(b0) * s.k * MR;
    const DirectFn* kernels = kDirect[nb - 1].data();
    int64_t pix[kDirectChunk];
    for (int p = 0, oy = q_begin / s.ow, ox = q_begin % s.ow; p < nq; ++p) {  // walk the pixels: no divisions
      pix[p] = static_cast<int64_t>(oy) * s.sh * wp + static_cast<int64_t>(ox) * s.sw;
      if (++ox == s.ow) ox = 0, ++oy;
    }
    alignas(64) float b[DJ * MR] = {};  // the block's bias, zeros past F
    if (bias) std::copy_n(bias + f0, nf, b);
    alignas(64) float part[kDirectChunk][DJ * MR];  // [pixel][channel]
    for (int p0 = 0; p0 < nq; p0 += DP) {
      const int np = std::min(DP, nq - p0);
      const auto [k0, k1] = kept.inside(s, (q_begin + p0) / s.ow, (q_begin + p0 + np - 1) / s.ow);
      kernels[np - 1](k0, k1, w, static_cast<size_t>(s.k) * MR, xp, kept.off, pix + p0, b, part[p0]);
    }
    const size_t at = static_cast<size_t>(f0) * pixels + q_begin;
    store_transposed(part, nq, nf, s.relu, res ? res + at : nullptr, y + at, pixels);
  }, fill);
}

// ---- pixel-row path: y[F, P] with a vector along 8 adjacent output pixels of one row ----
//
// For stride-1 convs whose output rows are whole vectors (OW a multiple of 8) and with at most kRowMaxRows kept
// rows: registers hold 6 output channels x 2 vectors of 8 pixels; per kept row the 16 input values are two vector
// loads from the padded input and each channel's weight is broadcast. The tile is then stored straight into y (no
// transpose), and a layer's channels are cut into tiles of 5-6 (29 filters: 30 computed, not the 32 of the direct
// path's 16-channel tile). It pays for layers with few filters and up to a few hundred kept rows; with many more rows
// a tile's weights (K x 64 bytes) no longer fit a 32 KiB L1 and the direct path is faster (kernels/README.md).
constexpr int PC = 6, PV = 2;        // 6 channels x 2 pixel vectors = 12 accumulators; per row 2 loads, 6 broadcasts
constexpr int kRowChunk = 8;         // pixel vectors per parallel work item
constexpr int kRowMaxRows = 512;    // the most kept rows the pixel-row path takes (above)

struct PixelTile {
  const float* w[PC];    // channel r's packed weights: row k at w[r][k * MR]
  float bias[PC];
  const float* x[PV];    // vector v's first pixel in the padded input; kept row k at x[v] + off[k]
  const float* res[PV];  // residual at vector v for the first channel, or null
  float* y[PV];          // output at vector v for the first channel; channel r at + r * pitch
};

template <int R, int V>
void pixel_row_kernel(int k0, int k1, const int64_t* off, const PixelTile& t, bool relu, size_t pitch) {
  vec8 acc[R][V];
  const float* w[R];
  const float* x[V];
  for (int r = 0; r < R; ++r) {
    w[r] = t.w[r];
    for (int v = 0; v < V; ++v) acc[r][v] = vec8{} + t.bias[r];
  }
  for (int v = 0; v < V; ++v) x[v] = t.x[v];
  for (int k = k0; k < k1; ++k) {
    const int64_t o = off[k];
    vec8 in[V];
    for (int v = 0; v < V; ++v) in[v] = load8(x[v] + o);
    for (int r = 0; r < R; ++r) {
      const float wr = w[r][static_cast<size_t>(k) * MR];
      for (int v = 0; v < V; ++v) acc[r][v] += wr * in[v];
    }
  }
  const vec8 zero{};
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      const vec8 a = t.res[v] ? acc[r][v] + load8(t.res[v] + r * pitch) : acc[r][v];
      *reinterpret_cast<vec8_u*>(t.y[v] + r * pitch) = relu ? (a < zero ? zero : a) : a;  // NaN stays, as in torch
    }
  }
}

using PixelRowFn = void (*)(int, int, const int64_t*, const PixelTile&, bool, size_t);

template <int V, int... R>
constexpr std::array<PixelRowFn, PC> pixel_row_row(std::integer_sequence<int, R...>) {
  return {&pixel_row_kernel<R + 1, V>...};
}

// kPixelRow[v - 1][r - 1]: the kernel for v pixel vectors and r channels
constexpr std::array<std::array<PixelRowFn, PC>, PV> kPixelRow = {
    pixel_row_row<1>(std::make_integer_sequence<int, PC>{}), pixel_row_row<2>(std::make_integer_sequence<int, PC>{})};

void conv_pixel_rows(const ac_conv_shape& s, int wp, const float* xp, const KeptRows& kept, const float* wpack,
                     const float* bias, const float* res, float* y, int threads, const Fill* fill) {
  const int tiles = (s.f + PC - 1) / PC, pixels = s.oh * s.ow, vectors = pixels / MR;
  const int chunks = (vectors + kRowChunk - 1) / kRowChunk;
  parallel_for(tiles * chunks, threads, [&](int item) {
    const int tile = item / chunks, v0 = (item % chunks) * kRowChunk, v1 = std::min(vectors, v0 + kRowChunk);
    // tiles as even as they go (32 channels: 5, 5, 6, 5, 5, 6): every tile uses 5 or 6 of its 6 register rows
    const int f0 = static_cast<int>(int64_t{s.f} * tile / tiles);
    const int nc = static_cast<int>(int64_t{s.f} * (tile + 1) / tiles) - f0;
    PixelTile t{};
    for (int r = 0; r < nc; ++r) {
      t.w[r] = wpack + static_cast<size_t>((f0 + r) / MR) * s.k * MR + (f0 + r) % MR;
      t.bias[r] = bias ? bias[f0 + r] : 0.0f;
    }
    for (int v = v0; v < v1; v += PV) {
      const int nv = std::min(PV, v1 - v);
      for (int i = 0; i < nv; ++i) {
        const int q = (v + i) * MR, oy = q / s.ow, ox = q % s.ow;
        const size_t at = static_cast<size_t>(f0) * pixels + q;
        t.x[i] = xp + static_cast<int64_t>(oy) * s.sh * wp + ox;
        t.res[i] = res ? res + at : nullptr;
        t.y[i] = y + at;
      }
      const auto [k0, k1] = kept.inside(s, v * MR / s.ow, (v + nv - 1) * MR / s.ow);
      kPixelRow[nv - 1][nc - 1](k0, k1, kept.off, t, s.relu, pixels);
    }
  }, fill);
}

int check(const ac_conv_shape& s, const int64_t* rows) {
  if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.f < 1 || s.k < 1) return -1;
  if (s.kh < 1 || s.kw < 1 || s.sh < 1 || s.sw < 1 || s.dh < 1 || s.dw < 1 || s.ph < 0 || s.pw < 0) return -2;
  if (s.oh != (s.h + 2 * s.ph - s.dh * (s.kh - 1) - 1) / s.sh + 1) return -3;
  if (s.ow != (s.w + 2 * s.pw - s.dw * (s.kw - 1) - 1) / s.sw + 1 || s.oh < 1 || s.ow < 1) return -3;
  const int64_t total = static_cast<int64_t>(s.c) * s.kh * s.kw;
  for (int k = 0; k < s.k; ++k) {
    if (rows[k] < 0 || rows[k] >= total || (k > 0 && rows[k] <= rows[k - 1])) return -4;
  }
  return 0;
}

}  // namespace

extern "C" size_t ac_conv_packed_size(int f, int k) { return static_cast<size_t>(round_up(f, MR)) * k; }

extern "C" void ac_conv_pack_weights(int f, int k, const float* w, float* out) {
  std::fill_n(out, ac_conv_packed_size(f, k), 0.0f);
  for (int o = 0; o < f; ++o) {
    float* dst = out + static_cast<size_t>(o / MR) * k * MR + o % MR;
    for (int j = 0; j < k; ++j) dst[static_cast<size_t>(j) * MR] = w[static_cast<size_t>(o) * k + j];
  }
}

namespace {

// Implicit GEMM for stride-1 convs: with the input padded, row k of virtual pixel q = oy * Wp + ox is
// padded[off[k] + q], so the micro-kernel reads B straight from it. Computes OH x Wp virtual pixels (the Wp - OW
// extra columns are dropped): worth it only where that waste is small next to the gather it saves.
struct Implicit {
  int wp, nt, tiles;
  explicit Implicit(const ac_conv_shape& s)
      : wp(s.w + 2 * s.pw), nt(std::min(NT, round_up(s.oh * wp, NR))), tiles((s.oh * wp + nt - 1) / nt) {}
  size_t tail(const ac_conv_shape& s) const { return static_cast<size_t>(tiles) * nt + wp * (s.kh * s.dh + 1); }
};

// Implicit GEMM pays where at least 40 % of the rows are kept and the extra virtual columns cost under 10 % (32 x 32
// maps and up); on smaller maps the gathered path is faster (kernels/README.md).
bool implicit_pays(const ac_conv_shape& s, const Implicit& im) {
  if (s.sh != 1 || s.sw != 1) return false;
  const int pixels = s.oh * s.ow, nt = std::min(NT, round_up(pixels, NR));
  const bool dense_enough = 5 * static_cast<int64_t>(s.k) >= 2 * static_cast<int64_t>(s.c) * s.kh * s.kw;
  return dense_enough && static_cast<double>(im.tiles) * im.nt <= 1.1 * round_up(pixels, nt);
}

void conv_implicit(const ac_conv_shape& s, const Implicit& im, const float* xp, const int64_t* off, const Gemm& gemm,
                   int threads, const Fill* fill) {
  const int chunks_f = (s.f + OC - 1) / OC;
  parallel_for(im.tiles * chunks_f, threads, [&](int item) {
    const int q0 = (item % im.tiles) * im.nt;
    gemm.tile(q0, item / im.tiles, ShiftedRows{xp + q0, off});
  }, fill);
}

// Every other conv: gather panels of kept rows from the padded input, then multiply.
void conv_gathered(const ac_conv_shape& s, const float* xp, int wp, const int64_t* off, const Gemm& gemm,
                   int threads, const Fill* fill) {
  const int nt = gemm.nt, tiles_p = (s.oh * s.ow + nt - 1) / nt, chunks_f = (s.f + OC - 1) / OC;
  const size_t panel = static_cast<size_t>(s.k) * nt;
  if (tiles_p >= kFusedTiles) {  // enough pixel tiles to share out: each gathers its own panel, hot in cache
    parallel_for(tiles_p, threads, [&](int p_tile) {
      thread_local std::vector<float> own;
      own.resize(panel);
      gather_panel(s, xp, wp, off, p_tile, nt, 0, s.k, own.data());
      for (int f_chunk = 0; f_chunk < chunks_f; ++f_chunk) gemm.tile(p_tile * nt, f_chunk, PanelRows{own.data(), nt});
    }, fill);
    return;
  }
  // few pixels (deep layers): gather every panel first, then share out channel chunks too
  thread_local std::vector<float> cols;  // all panels; grows to the largest layer, then stays
  cols.resize(panel * tiles_p);
  float* const buf = cols.data();  // the lambdas run on other threads: they must not name the thread_local
  const int k_chunks = (s.k + kGatherRows - 1) / kGatherRows;
  parallel_for(tiles_p * k_chunks, threads, [&](int item) {
    const int p_tile = item / k_chunks, k0 = (item % k_chunks) * kGatherRows;
    gather_panel(s, xp, wp, off, p_tile, nt, k0, std::min(s.k, k0 + kGatherRows), buf + p_tile * panel);
  }, fill);
  parallel_for(tiles_p * chunks_f, threads, [&](int item) {
    const int p_tile = item % tiles_p;
    gemm.tile(p_tile * nt, item / tiles_p, PanelRows{buf + p_tile * panel, nt});
  });
}

// The direct and pixel-row paths run on AVX2 builds only, where they beat the gather-GEMM on every conv shape
// measured. NEON builds keep the gather-GEMM (the direct paths built for armv8-a run more instructions under qemu);
// AVX-512 builds keep it too (the direct paths are not measured there). The figures: kernels/README.md.
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr bool kDirectPays = true;
#else
constexpr bool kDirectPays = false;
#endif

bool pixel_rows_pay(const ac_conv_shape& s) {
  return kDirectPays && s.sw == 1 && s.ow % MR == 0 && s.k <= kRowMaxRows;
}

}  // namespace

extern "C" int ac_compact_conv2d(const ac_conv_shape* s, const float* x, const float* wpack, const int64_t* rows,
                                 const float* bias, const float* residual, float* y, int threads) {
  if (const int err = check(*s, rows)) return err;
  constexpr bool direct = kDirectPays;
  const bool pixel_rows = pixel_rows_pay(*s);
  const Implicit im(*s);
  const bool implicit = !direct && implicit_pays(*s, im);
  const Padded pad(*s, implicit ? im.tail(*s) : 0);
  thread_local std::vector<float> padded;
  thread_local std::vector<int64_t> offsets;
  thread_local std::vector<char> used;
  thread_local std::vector<int> tap_start;
  const bool copy = implicit || s->ph > 0 || s->pw > 0;  // unpadded convs read the input itself
  if (copy) padded.resize(pad.size);
  offsets.resize(s->k);
  used.resize(s->c);
  tap_start.resize(s->kh * s->kw + 1);
  pad.offsets(*s, rows, offsets.data(), used.data(), tap_start.data());
  const KeptRows kept{offsets.data(), tap_start.data()};
  if (implicit) std::fill(used.begin(), used.end(), 1);  // virtual pixels read past their row: keep every plane clean
  const int pixels = s->oh * s->ow;
  const int nt = implicit ? im.nt : std::min(NT, round_up(pixels, NR)), wq = implicit ? pad.wp : s->ow;
  for (int n = 0; n < s->n; ++n) {
    const float* xn = x + static_cast<size_t>(n) * s->c * s->h * s->w;
    const float* xp = copy ? padded.data() : xn;
    const Fill fill{pad, *s, xn, used.data(), padded.data()};
    const Fill* prologue = copy ? &fill : nullptr;  // unpadded convs: no copy, no barrier
    const size_t image = static_cast<size_t>(n) * s->f * pixels;
    const float* res = residual ? residual + image : nullptr;
    const Gemm gemm{*s, wpack, bias, res, y + image, nt, wq};
    if (pixel_rows) {
      conv_pixel_rows(*s, pad.wp, xp, kept, wpack, bias, res, y + image, threads, prologue);
    } else if (direct) {
      conv_direct(*s, pad.wp, xp, kept, wpack, bias, res, y + image, threads, prologue);
    } else if (implicit) {
      conv_implicit(*s, im, xp, offsets.data(), gemm, threads, prologue);
    } else {
      conv_gathered(*s, xp, pad.wp, offsets.data(), gemm, threads, prologue);
    }
  }
  return 0;
}

extern "C" const char* ac_conv_error(int code) {
  switch (code) {
    case 0: return "ok";
    case -1: return "empty tensor: n, c, h, w, f and k must all be >= 1";
    case -2: return "kernel, stride and dilation must be >= 1 and padding >= 0";
    case -3: return "output size does not follow from input size, kernel, stride, padding and dilation";
    case -4: return "rows must be ascending, unique and inside [0, C*KH*KW)";
    default: return "unknown error";
  }
}
