// Minimal stand-in for TVM's src/support/base64.h: base64 streams over another stream, used by the
// runtime to put tensors into JSON. Buffers everything and converts with tvm-ffi's Base64Encode/Decode.
#ifndef AC_COMPAT_SRC_SUPPORT_BASE64_H_
#define AC_COMPAT_SRC_SUPPORT_BASE64_H_

#include <tvm/ffi/extra/base64.h>
#include <tvm/support/io.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "bytes_io.h"

namespace tvm {
namespace support {

class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;
  size_t Read(void*, size_t) override { throw std::runtime_error("Base64OutStream is write-only"); }
  size_t Write(const void* ptr, size_t size) override {
    raw_.append(static_cast<const char*>(ptr), size);
    return size;
  }
  /*! \brief Encode what was written and pass it on. */
  void Finish() {
    ffi::String text = ffi::Base64Encode(ffi::Bytes(raw_));
    out_->Write(static_cast<const void*>(text.data()), text.size());
    raw_.clear();
  }

 private:
  Stream* out_;
  std::string raw_;
};

class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* in) : in_(in) {}
  using Stream::Read;
  using Stream::Write;
  /*! \brief Read and decode the whole underlying stream. */
  void InitPosition() {
    std::string text;
    char buf[4096];
    for (size_t n; (n = in_->Read(buf, sizeof(buf))) > 0;) text.append(buf, n);
    ffi::Bytes bytes = ffi::Base64Decode(ffi::String(text));
    decoded_.assign(bytes.data(), bytes.size());
    reader_ = std::make_unique<BytesInStream>(decoded_);
  }
  size_t Read(void* ptr, size_t size) override { return reader_->Read(ptr, size); }
  size_t Write(const void*, size_t) override { throw std::runtime_error("Base64InStream is read-only"); }

 private:
  Stream* in_;
  std::string decoded_;
  std::unique_ptr<BytesInStream> reader_;
};

}  // namespace support
}  // namespace tvm

#endif  // AC_COMPAT_SRC_SUPPORT_BASE64_H_
