// Minimal stand-in for TVM's src/support/bytes_io.h: streams over an in-memory byte string.
#ifndef AC_COMPAT_SRC_SUPPORT_BYTES_IO_H_
#define AC_COMPAT_SRC_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace tvm {
namespace support {

/*! \brief Appends everything written to a std::string. */
class BytesOutStream : public Stream {
 public:
  explicit BytesOutStream(std::string* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;
  size_t Read(void*, size_t) override { throw std::runtime_error("BytesOutStream is write-only"); }
  size_t Write(const void* ptr, size_t size) override {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

/*! \brief Reads a byte string that outlives the stream. */
class BytesInStream : public Stream {
 public:
  BytesInStream(const char* data, size_t size) : data_(data), size_(size) {}
  explicit BytesInStream(const std::string& s) : BytesInStream(s.data(), s.size()) {}
  explicit BytesInStream(const ffi::Bytes& b) : BytesInStream(b.data(), b.size()) {}
  using Stream::Read;
  using Stream::Write;
  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, size_ - pos_);
    std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override { throw std::runtime_error("BytesInStream is read-only"); }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // AC_COMPAT_SRC_SUPPORT_BYTES_IO_H_
