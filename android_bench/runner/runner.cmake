# The device runner's core (included by the top-level CMakeLists.txt when AC_RUNNER=ON): a static library
# holding the TVM runtime built from the sources that the installed apache-tvm and apache-tvm-ffi wheels
# ship (never copied into this repo), and main.cc. ac_toolchain/native.py (link_runner) links it with a model's
# system-library objects and the compact kernel -- compiled per target by ac_toolchain/compile/lowering.py with
# the target's -march and -DAC_SYSTEM_LIB (it registers itself in the system library) -- into one static
# `runner`. No -march here: one core serves every flavour of an arch.
#
# The wheel lacks seven small headers; compat/ holds our own minimal versions (see compat/README.md).
if(NOT AC_TVM_DIR OR NOT AC_TVM_FFI_DIR)
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c
      "import os, tvm, tvm_ffi; print(os.path.dirname(tvm.__file__) + ';' + os.path.dirname(tvm_ffi.__file__))"
    OUTPUT_VARIABLE wheel_dirs OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  list(GET wheel_dirs 0 AC_TVM_DIR)
  list(GET wheel_dirs 1 AC_TVM_FFI_DIR)
endif()

set(rt ${AC_TVM_DIR}/src/runtime)
set(ac_tvm_runtime_sources
  ${rt}/cpu_device_api.cc ${rt}/device_api.cc ${rt}/file_utils.cc ${rt}/logging.cc ${rt}/module.cc
  ${rt}/tensor.cc ${rt}/thread_pool.cc ${rt}/threading_backend.cc ${rt}/workspace_pool.cc
  ${rt}/memory/memory_manager.cc
  ${rt}/vm/builtin.cc ${rt}/vm/bytecode.cc ${rt}/vm/executable.cc ${rt}/vm/vm.cc)
file(GLOB ac_tvm_ffi_sources ${AC_TVM_FFI_DIR}/src/ffi/*.cc ${AC_TVM_FFI_DIR}/src/ffi/extra/*.cc)
# Windows-only; and a static binary loads no shared libraries.
# Left out: Windows, dynamic loading, and what only the compiler side uses (structural equality / hashing,
# dataclass and JSON-graph serialisation, reflection helpers): ~25 % less to build.
list(FILTER ac_tvm_ffi_sources EXCLUDE REGEX
  "(backtrace_win|library_module_dynamic_lib|structural_[a-z]+|dataclass|serialization|reflection_extra|visit_error_context)\\.cc$")

# The runtime includes "../support/x.h" relative to src/runtime (and "../../support/x.h" from src/runtime/vm):
# give those paths a home in the build tree.
set(shim ${CMAKE_BINARY_DIR}/tvm_shim)
file(MAKE_DIRECTORY ${shim}/src/runtime/vm)
file(COPY ${CMAKE_CURRENT_LIST_DIR}/compat/src/support DESTINATION ${shim}/src)

add_library(ac_runner STATIC ${CMAKE_CURRENT_LIST_DIR}/main.cc ${ac_tvm_runtime_sources} ${ac_tvm_ffi_sources})
target_include_directories(ac_runner PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/compat ${shim}/src/runtime ${shim}/src/runtime/vm)
target_include_directories(ac_runner SYSTEM PRIVATE ${AC_TVM_DIR}/include ${AC_TVM_FFI_DIR}/include)
# TVM_FFI_USE_LIBBACKTRACE=0: libbacktrace is not part of the wheel (errors still carry their message).
target_compile_definitions(ac_runner PRIVATE TVM_FFI_USE_LIBBACKTRACE=0)
# TVM's own sources are not -Wall clean: keep the log readable.
set_source_files_properties(${ac_tvm_runtime_sources} ${ac_tvm_ffi_sources} PROPERTIES COMPILE_OPTIONS "-w;-O2")
