#include "metrics.h"

#include <algorithm>
#include <cmath>

namespace smyrf::cli {

ErrorMetrics compare(std::span<const float> a, std::span<const float> exact,
                     std::size_t cols) {
  ErrorMetrics m;
  double diff2 = 0, ref2 = 0, cos_sum = 0, cos_min = 1;
  const std::size_t rows = exact.size() / cols;
  for (std::size_t r = 0; r < rows; ++r) {
    double dot = 0, na = 0, ne = 0;
    for (std::size_t c = 0; c < cols; ++c) {
      const double x = a[r * cols + c], y = exact[r * cols + c];
      diff2 += (x - y) * (x - y);
      dot += x * y;
      na += x * x;
      ne += y * y;
    }
    ref2 += ne;
    const double cosine =
        (na == 0 || ne == 0) ? (na == ne ? 1.0 : 0.0) : dot / std::sqrt(na * ne);
    cos_sum += cosine;
    cos_min = std::min(cos_min, cosine);
  }
  m.rel_frobenius = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  m.mean_cosine = rows > 0 ? cos_sum / static_cast<double>(rows) : 1.0;
  m.min_cosine = cos_min;
  return m;
}

}  // namespace smyrf::cli
