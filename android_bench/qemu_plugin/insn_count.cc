// A qemu TCG plugin that counts the guest instructions a program executes, deterministically: every
// translated block adds its instruction count to one counter each time it runs (an inline add, no callback).
// Written for AutoCompress's qemu-arm64 bench device instead of building qemu's tests/plugin/insn.c, which
// needs qemu's source tree and glib. Declares the few entry points of qemu's plugin API version 1 it uses
// (qemu 7.2, Debian 12), so it builds with nothing but a C++ compiler.
//
//   qemu-aarch64 -plugin ./libac_qemu_insn.so,out=count.txt ./runner ...   -> count.txt: "insns 123456\n"
//
// Marks: each time the guest calls close(AC_MARK_FD) -- an fd no process holds, so the call only returns EBADF --
// the count so far is recorded, and written after the total as "mark N" lines. The runner's --conv-table mode
// brackets every kernel call with marks, so one qemu run counts many kernel shapes (android_bench/runner/main.cc).
//
// The counter is shared by all guest threads and not atomic: run the guest single-threaded.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;  // only passed through
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb* tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void* userdata);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                                              uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                                              uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb* tb, enum qemu_plugin_op op, void* ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb* tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void* userdata);
void qemu_plugin_outs(const char* string);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);

__attribute__((visibility("default"))) extern const int qemu_plugin_version;
const int qemu_plugin_version = 1;

}  // extern "C"

namespace {

uint64_t g_insns = 0;
std::string g_out;  // file to write the count to; empty: qemu's log (stderr)
std::vector<uint64_t> g_marks;  // the count at each mark
constexpr int64_t kCloseSyscall = 57;    // aarch64 Linux
constexpr int64_t kMarkFd = -0xAC0;      // AC_MARK_FD of the runner

void OnSyscall(qemu_plugin_id_t, unsigned int, int64_t num, uint64_t a1, uint64_t, uint64_t, uint64_t, uint64_t,
               uint64_t, uint64_t, uint64_t) {
  if (num == kCloseSyscall && static_cast<int32_t>(a1) == kMarkFd) g_marks.push_back(g_insns);
}

void OnTranslate(qemu_plugin_id_t, struct qemu_plugin_tb* tb) {
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &g_insns, qemu_plugin_tb_n_insns(tb));
}

void OnExit(qemu_plugin_id_t, void*) {
  char line[64];
  std::snprintf(line, sizeof(line), "insns %llu\n", static_cast<unsigned long long>(g_insns));
  std::string text = line;
  for (uint64_t mark : g_marks) {
    std::snprintf(line, sizeof(line), "mark %llu\n", static_cast<unsigned long long>(mark));
    text += line;
  }
  if (g_out.empty()) return qemu_plugin_outs(text.c_str());
  if (FILE* f = std::fopen(g_out.c_str(), "w")) {
    std::fputs(text.c_str(), f);
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
  qemu_plugin_register_vcpu_syscall_cb(id, OnSyscall);
  qemu_plugin_register_atexit_cb(id, OnExit, nullptr);
  return 0;
}
