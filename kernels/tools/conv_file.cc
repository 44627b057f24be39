// ac_conv_file: run ac_compact_conv2d on raw little-endian files, for checking a cross-compiled build under
// qemu-user against torch.
//   ac_conv_file N C H W F K KH KW SH SW PH PW DH DW OH OW RELU x.f32 weight.f32 rows.i64 bias.f32|- out.f32
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ac/compact_conv.h"

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
  if (argc != 23) {
    std::fprintf(stderr, "usage: %s N C H W F K KH KW SH SW PH PW DH DW OH OW RELU x weight rows bias|- out\n",
                 argv[0]);
    return 2;
  }
  int v[17];
  for (int i = 0; i < 17; ++i) v[i] = std::atoi(argv[1 + i]);
  const ac_conv_shape s{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
                        v[10], v[11], v[12], v[13], v[14], v[15], v[16]};
  std::vector<float> x(static_cast<size_t>(s.n) * s.c * s.h * s.w), w(static_cast<size_t>(s.f) * s.k), b(s.f);
  std::vector<float> y(static_cast<size_t>(s.n) * s.f * s.oh * s.ow);
  std::vector<int64_t> rows(s.k);
  const bool has_bias = argv[21][0] != '-';
  if (!read_file(argv[18], x) || !read_file(argv[19], w) || !read_file(argv[20], rows) ||
      (has_bias && !read_file(argv[21], b))) {
    std::fprintf(stderr, "cannot read an input file\n");
    return 2;
  }
  std::vector<float> packed(ac_conv_packed_size(s.f, s.k));
  ac_conv_pack_weights(s.f, s.k, w.data(), packed.data());
  const int err =
      ac_compact_conv2d(&s, x.data(), packed.data(), rows.data(), has_bias ? b.data() : nullptr, nullptr, y.data(), 0);
  if (err) {
    std::fprintf(stderr, "ac_compact_conv2d: %s\n", ac_conv_error(err));
    return 1;
  }
  std::FILE* fh = std::fopen(argv[22], "wb");
  if (!fh || std::fwrite(y.data(), sizeof(float), y.size(), fh) != y.size()) return 2;
  std::fclose(fh);
  return 0;
}
