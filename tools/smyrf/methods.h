// Names of methods and transforms as the command line spells them.
#pragma once

#include <stdexcept>
#include <string>

#include "smyrf/smyrf.h"

namespace smyrf::cli {

inline Transform parse_transform(const std::string& name) {
  if (name == "xbox_plus") return Transform::xbox_plus;
  if (name == "xbox") return Transform::xbox;
  if (name == "h2_alsh") return Transform::h2_alsh;
  if (name == "l2_alsh") return Transform::l2_alsh;
  throw std::invalid_argument("unknown transform '" + name +
                              "' (valid: xbox_plus, xbox, h2_alsh, l2_alsh)");
}

// `smyrf` gets the given SMYRF settings; the exact methods have none.
inline MethodConfig parse_method(const std::string& name, const SmyrfConfig& smyrf) {
  if (name == "reference") return ReferenceConfig{};
  if (name == "dense") return DenseConfig{};
  if (name == "smyrf") return smyrf;
  throw std::invalid_argument("unknown method '" + name + "' (valid: reference, dense, smyrf)");
}

}  // namespace smyrf::cli
