// Minimal stand-in for TVM's src/support/utils.h: only what the runtime files the runner builds use.
#ifndef AC_COMPAT_SRC_SUPPORT_UTILS_H_
#define AC_COMPAT_SRC_SUPPORT_UTILS_H_

#include <algorithm>
#include <cctype>
#include <string>

namespace tvm {
namespace support {

/*! \return whether s is a non-empty string of decimal digits */
inline bool IsNumber(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace support
}  // namespace tvm

#endif  // AC_COMPAT_SRC_SUPPORT_UTILS_H_
