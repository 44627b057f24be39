// Minimal stand-in for TVM's <tvm/support/io.h>, which the apache-tvm wheel does not ship (written for
// AutoCompress's runner; not TVM's file). A byte stream plus typed Read/Write in the serialisation format
// TVM uses for VM executables and tensors: POD values raw (little-endian, as on x86-64 and aarch64),
// strings and vectors as a uint64 length followed by their elements.
#ifndef AC_COMPAT_TVM_SUPPORT_IO_H_
#define AC_COMPAT_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

/*! \brief How a type is written: specialisations have static Write(Stream*, const T&) and Read(Stream*, T*). */
template <typename T, typename Enable = void>
struct Serializer;

class Stream {
 public:
  virtual ~Stream() = default;
  /*! \return the number of bytes read; fewer than size at the end of the stream */
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool Read(T* out) {
    return Serializer<T>::Read(this, out);
  }
  template <typename T>
  void WriteArray(const T* data, size_t n) {
    for (size_t i = 0; i < n; ++i) Write(data[i]);
  }
  template <typename T>
  bool ReadArray(T* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (!Read(data + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // AC_COMPAT_TVM_SUPPORT_IO_H_
