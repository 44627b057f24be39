// ac_conv_int8_file: run ac_compact_conv2d_int8 on raw little-endian files, for checking a cross-compiled build
// under qemu-user against the int32 reference of tests/kernels/test_compact_conv_int8.py. Prints "path NAME" (the
// multiply path of this build, ac_conv_int8_path) on stdout.
//   ac_conv_int8_file N C H W F K KH KW SH SW PH PW DH DW OH OW RELU XZ YZ RZ
//                     x.i8 weight.i8 rows.i64 bias.i32|- multipliers.f32 residual.i8|- out.i8
// multipliers.f32 holds F + 1 floats: m[0..F-1], then the residual's m_r (read only with a residual).
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ac/compact_conv_int8.h"

namespace {

template <typename T>
bool read_file(const char* path, std::vector<T>& out) {
  std::FILE* fh = std::fopen(path, "rb");
  if (!fh) return false;
  const bool ok = std::fread(out.data(), sizeof(T), out.size(), fh) == out.size();
  std::fclose(fh);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr int kDims = 20;
  if (argc != 1 + kDims + 7) {
    std::fprintf(stderr,
                 "usage: %s N C H W F K KH KW SH SW PH PW DH DW OH OW RELU XZ YZ RZ x weight rows bias|- "
                 "multipliers residual|- out\n",
                 argv[0]);
    return 2;
  }
  int v[kDims];
  for (int i = 0; i < kDims; ++i) v[i] = std::atoi(argv[1 + i]);
  const ac_conv_shape s{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
                        v[10], v[11], v[12], v[13], v[14], v[15], v[16]};
  const char* const* files = argv + 1 + kDims;
  const size_t out_size = static_cast<size_t>(s.n) * s.f * s.oh * s.ow;
  std::vector<int8_t> x(static_cast<size_t>(s.n) * s.c * s.h * s.w), w(static_cast<size_t>(s.f) * s.k);
  std::vector<int8_t> res(out_size), y(out_size);
  std::vector<int64_t> rows(s.k);
  std::vector<int32_t> bias(s.f);
  std::vector<float> mult(s.f + 1);
  const bool has_bias = files[3][0] != '-', has_res = files[5][0] != '-';
  if (!read_file(files[0], x) || !read_file(files[1], w) || !read_file(files[2], rows) ||
      (has_bias && !read_file(files[3], bias)) || !read_file(files[4], mult) || (has_res && !read_file(files[5], res))) {
    std::fprintf(stderr, "cannot read an input file\n");
    return 2;
  }
  const ac_conv_int8_quant q{mult.data(), mult[s.f], v[17], v[18], v[19]};
  std::vector<unsigned char> packed(ac_conv_int8_packed_size(s.f, s.k));
  ac_conv_int8_pack_weights(s.f, s.k, w.data(), packed.data());
  const int err = ac_compact_conv2d_int8(&s, &q, x.data(), packed.data(), rows.data(), has_bias ? bias.data() : nullptr,
                                         has_res ? res.data() : nullptr, y.data(), 0);
  if (err) {
    std::fprintf(stderr, "ac_compact_conv2d_int8: %s\n", ac_conv_int8_error(err));
    return 1;
  }
  std::FILE* fh = std::fopen(files[6], "wb");
  if (!fh || std::fwrite(y.data(), 1, y.size(), fh) != y.size()) return 2;
  std::fclose(fh);
  std::printf("path %s\n", ac_conv_int8_path());
  return 0;
}
