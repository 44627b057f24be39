// A qemu TCG plugin that counts the guest instructions a program executes, deterministically: every
// translated block adds its instruction count to one counter each time it runs (an inline add, no callback).
// Written for AutoCompress's qemu-arm64 bench device instead of building qemu's tests/plugin/insn.c, which
// needs qemu's source tree and glib. Declares the few entry points of qemu's plugin API version 1 it uses
// (qemu 7.2, Debian 12), so it builds with nothing but a C++ compiler.
//
//   qemu-aarch64 -plugin ./libac_qemu_insn.so,out=count.txt ./runner ...   -> count.txt: "insns 123456\n"
//
// The counter is shared by all guest threads and not atomic: run the guest single-threaded.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

extern "C" {

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;  // only passed through
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb* tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void* userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb* tb, enum qemu_plugin_op op, void* ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb* tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void* userdata);
void qemu_plugin_outs(const char* string);

__attribute__((visibility("default"))) extern const int qemu_plugin_version;
const int qemu_plugin_version = 1;

}  // extern "C"

namespace {

uint64_t g_insns = 0;
std::string g_out;  // file to write the count to; empty: qemu's log (stderr)

void OnTranslate(qemu_plugin_id_t, struct qemu_plugin_tb* tb) {
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &g_insns, qemu_plugin_tb_n_insns(tb));
}

void OnExit(qemu_plugin_id_t, void*) {
  char line[64];
  std::snprintf(line, sizeof(line), "insns %llu\n", static_cast<unsigned long long>(g_insns));
  if (g_out.empty()) return qemu_plugin_outs(line);
  if (FILE* f = std::fopen(g_out.c_str(), "w")) {
    std::fputs(line, f);
    std::fclose(f);
  }
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t*,
                                                                          int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "out=", 4) != 0) {
      std::fprintf(stderr, "libac_qemu_insn: unknown argument '%s' (only out=FILE)\n", argv[i]);
      return -1;
    }
    g_out = argv[i] + 4;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, OnTranslate);
  qemu_plugin_register_atexit_cb(id, OnExit, nullptr);
  return 0;
}
