// Error of an approximate attention output against the exact one.
#pragma once

#include <span>

namespace smyrf::cli {

struct ErrorMetrics {
  double rel_frobenius = 0;  // ||O - O_exact||_F / ||O_exact||_F
  double mean_cosine = 0;    // mean over query rows of cos(O_i, O_exact_i)
  double min_cosine = 0;
};

// a and exact: [rows, cols] row-major. Accumulated in double. Rows where either vector is zero
// count as cosine 1 when both are zero, else 0.
ErrorMetrics compare(std::span<const float> a, std::span<const float> exact,
                     std::size_t cols);

}  // namespace smyrf::cli
