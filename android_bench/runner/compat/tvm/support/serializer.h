// Minimal stand-in for TVM's <tvm/support/serializer.h> (see io.h): how each type is written to a Stream.
#ifndef AC_COMPAT_TVM_SUPPORT_SERIALIZER_H_
#define AC_COMPAT_TVM_SUPPORT_SERIALIZER_H_

#include <tvm/support/io.h>

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>

#include <string>
#include <type_traits>
#include <vector>

namespace tvm {
namespace support {
/*! \brief Plain values (numbers, enums, DLDataType, DLDevice): their bytes. */
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_trivially_copyable_v<T>>> {
  static void Write(Stream* s, const T& v) { s->Write(static_cast<const void*>(&v), sizeof(T)); }
  static bool Read(Stream* s, T* v) { return s->Read(static_cast<void*>(v), sizeof(T)) == sizeof(T); }
};

/*! \brief Classes with Save(Stream*) / Load(Stream*) members serialise themselves. */
template <typename T>
struct Serializer<T, std::enable_if_t<!std::is_trivially_copyable_v<T> &&
                                   std::is_same_v<decltype(std::declval<T&>().Load(nullptr)), bool>>> {
  static void Write(Stream* s, const T& v) { v.Save(s); }
  static bool Read(Stream* s, T* v) { return v->Load(s); }
};

template <>
struct Serializer<std::string> {
  static void Write(Stream* s, const std::string& v) {
    s->Write(static_cast<uint64_t>(v.size()));
    s->Write(static_cast<const void*>(v.data()), v.size());
  }
  static bool Read(Stream* s, std::string* v) {
    uint64_t n = 0;
    if (!s->Read(&n)) return false;
    v->resize(n);
    return n == 0 || s->Read(static_cast<void*>(v->data()), n) == n;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static void Write(Stream* s, const std::vector<T>& v) {
    s->Write(static_cast<uint64_t>(v.size()));
    if constexpr (std::is_trivially_copyable_v<T>) {
      if (!v.empty()) s->Write(static_cast<const void*>(v.data()), v.size() * sizeof(T));
    } else {
      for (const T& item : v) s->Write(item);
    }
  }
  static bool Read(Stream* s, std::vector<T>* v) {
    uint64_t n = 0;
    if (!s->Read(&n)) return false;
    v->resize(n);
    if constexpr (std::is_trivially_copyable_v<T>) {
      size_t bytes = n * sizeof(T);
      return n == 0 || s->Read(static_cast<void*>(v->data()), bytes) == bytes;
    } else {
      for (T& item : *v) {
        if (!s->Read(&item)) return false;
      }
      return true;
    }
  }
};

/*! \brief tvm-ffi strings: as std::string. */
template <>
struct Serializer<ffi::String> {
  static void Write(Stream* s, const ffi::String& v) { Serializer<std::string>::Write(s, std::string(v)); }
  static bool Read(Stream* s, ffi::String* v) {
    std::string tmp;
    if (!Serializer<std::string>::Read(s, &tmp)) return false;
    *v = ffi::String(std::move(tmp));
    return true;
  }
};

/*! \brief tvm-ffi arrays: a uint64 count, then each element. */
template <typename T>
struct Serializer<ffi::Array<T>> {
  static void Write(Stream* s, const ffi::Array<T>& v) {
    s->Write(static_cast<uint64_t>(v.size()));
    for (const T& item : v) Serializer<T>::Write(s, item);
  }
  static bool Read(Stream* s, ffi::Array<T>* v) {
    uint64_t n = 0;
    if (!s->Read(&n)) return false;
    ffi::Array<T> out;
    for (uint64_t i = 0; i < n; ++i) {
      T item;
      if (!Serializer<T>::Read(s, &item)) return false;
      out.push_back(item);
    }
    *v = std::move(out);
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // AC_COMPAT_TVM_SUPPORT_SERIALIZER_H_
