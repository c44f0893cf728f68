// Input elements (float or bf16) as float or double: every conversion here is exact (bf16 is
// the upper half of an f32, and f32 -> f64 widens). The one place the element types meet the
// arithmetic types; the per-target kernels' vector loads of the same conversions are
// LoadAs (kernels/tile_matmul-inl.h).
#pragma once

#include <type_traits>

#include "hwy/base.h"

namespace smyrf::detail {

inline float to_float(float x) { return x; }
inline float to_float(hwy::bfloat16_t x) { return hwy::F32FromBF16(x); }

inline double to_double(double x) { return x; }
inline double to_double(float x) { return x; }
inline double to_double(hwy::bfloat16_t x) { return hwy::F32FromBF16(x); }

// x as To (float or double): to_float or to_double.
template <class To, class From>
inline To convert_to(From x) {
  static_assert(std::is_same_v<To, float> || std::is_same_v<To, double>);
  if constexpr (std::is_same_v<To, double>) {
    return to_double(x);
  } else {
    static_assert(!std::is_same_v<From, double>, "double -> float would round");
    return to_float(x);
  }
}

}  // namespace smyrf::detail
