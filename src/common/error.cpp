#include "common/error.h"

#include <sstream>

namespace smyrf::detail {

void fail(const std::string& parameter, const std::string& value, const std::string& why) {
  throw Error("smyrf: " + parameter + " = " + value + ": " + why);
}

std::string str(std::int64_t v) { return std::to_string(v); }

std::string str(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string ptr_str(const void* p) {
  std::ostringstream s;
  s << p;
  return s.str();
}

}  // namespace smyrf::detail
