// ac_runner: runs a TVM-compiled model that is linked into this binary as a system library, and prints
// one JSON line per event (protocol: android_bench/runner/README.md). Built statically, so the same binary
// runs on Android, under qemu-user and on the host.
//
//   ./runner --manifest manifest.json [--warmup 10] [--runs 50] [--min-seconds 2] [--threads 0] [--seed 0]
//            [--input FILE]... [--save-outputs DIR]
//   ./runner --conv-table CELLS [--warmup 2] [--runs 5] [--threads 0] [--seed 0]
//
// --conv-table measures the compact kernel the runner links (the one a model calls) on many conv shapes in one
// process, one "cell" event per line of CELLS, for the latency tables of ac_toolchain/latency.py.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <tvm/runtime/tensor.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/syscall.h>
#include <unistd.h>

namespace {

namespace ffi = tvm::ffi;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string manifest = "manifest.json";
  int warmup = 10;
  int runs = 50;
  double min_seconds = 2.0;
  int threads = 0;
  unsigned seed = 0;
  std::vector<std::string> inputs;
  std::string save_outputs;
  std::string conv_table;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;
};

[[noreturn]] void Fail(const std::string& message) { throw std::runtime_error(message); }

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) Fail("missing value after " + flag);
    std::string value = argv[++i];
    if (flag == "--manifest") o.manifest = value;
    else if (flag == "--warmup") o.warmup = std::stoi(value);
    else if (flag == "--runs") o.runs = std::stoi(value);
    else if (flag == "--min-seconds") o.min_seconds = std::stod(value);
    else if (flag == "--threads") o.threads = std::stoi(value);
    else if (flag == "--seed") o.seed = static_cast<unsigned>(std::stoul(value));
    else if (flag == "--input") o.inputs.push_back(value);
    else if (flag == "--save-outputs") o.save_outputs = value;
    else if (flag == "--conv-table") o.conv_table = value;
    else Fail("unknown flag " + flag + " (see android_bench/runner/README.md)");
  }
  if (o.warmup < 0 || o.runs < 1 || o.min_seconds < 0 || o.threads < 0) Fail("flag values out of range");
  return o;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<TensorSpec> ReadInputs(const std::string& manifest_path) {
  ffi::String error;
  ffi::json::Value root = ffi::json::Parse(ReadFile(manifest_path), &error);
  if (!error.empty()) Fail(manifest_path + " is not valid JSON: " + std::string(error));
  std::vector<TensorSpec> specs;
  for (const ffi::Any& item : root.cast<ffi::json::Object>().at("inputs").cast<ffi::json::Array>()) {
    auto entry = item.cast<ffi::json::Object>();
    TensorSpec spec{entry.at("name").cast<ffi::String>(), {}, entry.at("dtype").cast<ffi::String>()};
    for (const ffi::Any& d : entry.at("shape").cast<ffi::json::Array>()) spec.shape.push_back(d.cast<int64_t>());
    specs.push_back(spec);
  }
  if (specs.empty()) Fail(manifest_path + " lists no inputs");
  return specs;
}

ffi::Tensor MakeInput(const TensorSpec& spec, const std::string& file, std::mt19937* rng) {
  if (spec.dtype != "float32") Fail("input " + spec.name + ": only float32 inputs are supported, not " + spec.dtype);
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape(spec.shape), DLDataType{kDLFloat, 32, 1}, cpu);
  size_t count = 1;
  for (int64_t d : spec.shape) count *= static_cast<size_t>(d);
  auto* data = static_cast<float*>(t.data_ptr());
  if (file.empty()) {
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (size_t i = 0; i < count; ++i) data[i] = uniform(*rng);
  } else {
    std::string bytes = ReadFile(file);
    if (bytes.size() != count * sizeof(float)) {
      Fail(file + " holds " + std::to_string(bytes.size()) + " bytes; input " + spec.name + " needs " +
           std::to_string(count * sizeof(float)) + " (raw little-endian float32)");
    }
    std::memcpy(data, bytes.data(), bytes.size());
  }
  return t;
}

/*! \brief The model's VM, initialised for the CPU (as relax.VirtualMachine(lib, tvm.cpu()) does). */
ffi::Module LoadVirtualMachine() {
  const auto system_lib = ffi::Function::GetGlobal("ffi.SystemLib");
  if (!system_lib) Fail("this runner was linked without the tvm-ffi system library support");
  auto lib = (*system_lib)().cast<ffi::Module>();
  auto vm = lib->GetFunction("vm_load_executable");
  if (!vm) Fail("no model is linked into this runner (vm_load_executable not found)");
  auto machine = (*vm)().cast<ffi::Module>();
  constexpr int kPooledAllocator = 2;
  (*machine->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  return machine;
}

std::vector<ffi::Tensor> Outputs(const ffi::Any& result) {
  if (auto t = result.as<ffi::Tensor>()) return {*t};
  std::vector<ffi::Tensor> out;
  for (const ffi::Any& item : result.cast<ffi::Array<ffi::Any>>()) out.push_back(item.cast<ffi::Tensor>());
  return out;
}

void SaveOutputs(const std::vector<ffi::Tensor>& outputs, const std::string& dir) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string path = dir + "/output" + std::to_string(i) + ".bin";
    std::ofstream out(path, std::ios::binary);
    const DLTensor* t = outputs[i].GetDLTensorPtr();
    out.write(static_cast<const char*>(t->data), static_cast<std::streamsize>(ffi::GetDataSize(*t)));
    if (!out) Fail("cannot write " + path);
  }
}

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

void PrintStart(const Options& o, const std::vector<TensorSpec>& specs) {
  std::printf("{\"event\": \"start\", \"runner\": \"ac_runner\", \"version\": 1, \"threads\": %d, "
              "\"warmup\": %d, \"runs\": %d, \"min_seconds\": %g, \"seed\": %u, \"inputs\": %zu}\n",
              o.threads, o.warmup, o.runs, o.min_seconds, o.seed, specs.size());
  std::fflush(stdout);
}

// ---- --conv-table: the kernel alone, on many shapes ----

// An fd no process holds: close() only returns EBADF, and the qemu-arm64 device's plugin records its instruction
// count at every such call (android_bench/qemu_plugin/insn_count.cc), so counts need no timer.
constexpr int kMarkFd = -0xAC0;
void Mark() { syscall(SYS_close, kMarkFd); }

// One line of CELLS: "c h w f k kh kw sh sw ph pw dh dw" (batch 1, ReLU on, no residual). The kept rows are spread
// evenly over the channels, then the taps (as column pruning keeps some rows of most channels): the i-th of k is
// position floor(i * c*kh*kw / k) of the (channel, tap) pairs in channel-major order.
struct Cell {
  int64_t c, h, w, f, k, kh, kw, sh, sw, ph, pw, dh, dw;
};

std::vector<Cell> ReadCells(const std::string& path) {
  std::istringstream in(ReadFile(path));
  std::vector<Cell> cells;
  Cell c{};
  while (in >> c.c >> c.h >> c.w >> c.f >> c.k >> c.kh >> c.kw >> c.sh >> c.sw >> c.ph >> c.pw >> c.dh >> c.dw) {
    if (c.k < 1 || c.k > c.c * c.kh * c.kw || c.f < 1) Fail(path + ": a cell keeps no rows, too many, or no filters");
    cells.push_back(c);
  }
  if (!in.eof()) Fail(path + ": every line must hold 13 integers (c h w f k kh kw sh sw ph pw dh dw)");
  return cells;
}

ffi::Tensor Filled(std::vector<int64_t> shape, std::mt19937* rng) {
  ffi::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape(shape), DLDataType{kDLFloat, 32, 1}, DLDevice{kDLCPU, 0});
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  auto* data = static_cast<float*>(t.data_ptr());
  for (size_t i = 0, n = ffi::GetDataSize(*t.GetDLTensorPtr()) / sizeof(float); i < n; ++i) data[i] = uniform(*rng);
  return t;
}

ffi::Tensor Integers(const std::vector<int64_t>& values) {
  ffi::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape({static_cast<int64_t>(values.size())}),
                                              DLDataType{kDLInt, 64, 1}, DLDevice{kDLCPU, 0});
  std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

int RunTable(const Options& o) {
  if (o.threads > 0) setenv("TVM_NUM_THREADS", std::to_string(o.threads).c_str(), 1);
  const std::vector<Cell> cells = ReadCells(o.conv_table);
  const auto system_lib = ffi::Function::GetGlobal("ffi.SystemLib");
  if (!system_lib) Fail("this runner was linked without the tvm-ffi system library support");
  auto found = (*system_lib)().cast<ffi::Module>()->GetFunction("ac_compact_conv2d");
  if (!found) Fail("no compact kernel is linked into this runner (ac_compact_conv2d not found)");
  const ffi::Function conv = *found;
  std::printf("{\"event\": \"start\", \"runner\": \"ac_runner\", \"version\": 1, \"mode\": \"conv-table\", "
              "\"threads\": %d, \"warmup\": %d, \"runs\": %d, \"seed\": %u, \"cells\": %zu}\n",
              o.threads, o.warmup, o.runs, o.seed, cells.size());
  {  // an empty cell: what the marks and the timer cost by themselves (the qemu device subtracts it)
    Mark();
    volatile double idle = Micros(Clock::now() - Clock::now());
    Mark();
    (void)idle;
  }
  std::mt19937 rng(o.seed);
  for (size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = cells[i];
    const int64_t oh = (c.h + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1;
    const int64_t ow = (c.w + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1;
    if (oh < 1 || ow < 1) Fail("cell " + std::to_string(i) + ": the kernel does not fit the input");
    std::vector<int64_t> rows(c.k);
    const int64_t taps = c.kh * c.kw;
    for (int64_t r = 0; r < c.k; ++r) {  // position j of the c*taps in channel-major order is row (tap * c + channel)
      const int64_t j = r * (c.c * taps) / c.k;
      rows[r] = (j % taps) * c.c + j / taps;
    }
    std::sort(rows.begin(), rows.end());
    ffi::Tensor x = Filled({1, c.c, c.h, c.w}, &rng), weight = Filled({(c.f + 7) / 8, c.k, 8}, &rng);
    ffi::Tensor bias = Filled({c.f}, &rng), y = Filled({1, c.f, oh, ow}, &rng), kept = Integers(rows);
    ffi::Tensor geometry = Integers({c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, 1});
    for (int r = 0; r < o.warmup; ++r) conv(x, weight, kept, bias, geometry, y);
    std::vector<double> us(o.runs);
    Mark();
    for (int r = 0; r < o.runs; ++r) {
      const Clock::time_point t0 = Clock::now();
      conv(x, weight, kept, bias, geometry, y);
      us[r] = Micros(Clock::now() - t0);
    }
    Mark();
    std::string samples;
    for (int r = 0; r < o.runs; ++r) samples += (r ? ", " : "") + std::to_string(us[r]);
    std::printf("{\"event\": \"cell\", \"index\": %zu, \"samples_us\": [%s]}\n", i, samples.c_str());
    std::fflush(stdout);
  }
  std::printf("{\"event\": \"done\", \"cells\": %zu}\n", cells.size());
  return 0;
}

int Run(const Options& o) {
  if (o.threads > 0) setenv("TVM_NUM_THREADS", std::to_string(o.threads).c_str(), 1);
  std::vector<TensorSpec> specs = ReadInputs(o.manifest);
  if (!o.inputs.empty() && o.inputs.size() != specs.size()) Fail("give one --input per model input");
  std::mt19937 rng(o.seed);
  std::vector<ffi::Tensor> inputs;
  for (size_t i = 0; i < specs.size(); ++i) inputs.push_back(MakeInput(specs[i], o.inputs.empty() ? "" : o.inputs[i], &rng));
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Module vm = LoadVirtualMachine();
  ffi::Function main_fn = *vm->GetFunction("main");
  ffi::Any result;
  auto infer = [&]() { main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result); };
  PrintStart(o, specs);
  for (int i = 0; i < o.warmup; ++i) infer();
  const Clock::time_point begin = Clock::now();
  int n = 0;
  while (n < o.runs || Micros(Clock::now() - begin) < o.min_seconds * 1e6) {
    const Clock::time_point t0 = Clock::now();
    infer();
    std::printf("{\"event\": \"sample\", \"index\": %d, \"us\": %.3f}\n", n++, Micros(Clock::now() - t0));
    std::fflush(stdout);
  }
  if (!o.save_outputs.empty()) SaveOutputs(Outputs(result), o.save_outputs);
  std::printf("{\"event\": \"done\", \"runs\": %d, \"total_us\": %.3f}\n", n, Micros(Clock::now() - begin));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = ParseArgs(argc, argv);
    return o.conv_table.empty() ? Run(o) : RunTable(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ac_runner: error: %s\n", e.what());
    return 1;
  }
}
