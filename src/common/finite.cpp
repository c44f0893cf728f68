#include "common/finite.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"

namespace smyrf::detail {

void check_inputs_finite(const Problem& pr) {
  // One pass over the rows a method reads checks two things, in a fixed order so that the
  // message does not depend on the thread count. Tasks are blocks of rows — per (b, h): query
  // rows, then key rows (K row j, then V row j) — and each records its first bad row; the lowest
  // task wins.
  //   * Every element is finite.
  //   * Every value stays inside the float range the methods compute in: Q and K row norms and
  //     |V| elements at most 2^32, and |scale| * R^2 at most 2^32, R the largest Q or K row norm.
  //     Then scores, squared norms, feature-map arguments and sums of up to 2^31 weighted values
  //     all stay far from FLT_MAX (~2^128) in every method; larger inputs would overflow to
  //     Inf/NaN somewhere, so they are rejected here instead.
  struct Hit {
    int tensor = -1;  // 0 = q, 1 = k, 2 = v
    bool finite = true;
    std::int64_t row = 0, col = 0;
    double value = 0;  // the non-finite element, the row norm or |v|
  };
  constexpr double kLimit = 4294967296.0;  // 2^32
  constexpr std::int64_t kRows = 512;
  const std::int64_t q_blocks = (pr.Nq + kRows - 1) / kRows, k_blocks = (pr.Nk + kRows - 1) / kRows;
  const std::int64_t per_head = q_blocks + k_blocks;
  const std::int64_t tasks = pr.B * pr.H * per_head;
  std::vector<Hit> hits(static_cast<std::size_t>(tasks));
  std::vector<double> max_norm2(static_cast<std::size_t>(tasks), 0.0);
  with_input_type(pr.dtype, [&](auto type_tag) {
    using T = decltype(type_tag);
    // A Q or K row: its first non-finite element, else its norm if above the limit.
    auto check_row = [&](int tensor, const T* row, std::int64_t i, double* norm2, Hit* hit) {
      double sum = 0;
      for (std::int64_t c = 0; c < pr.d; ++c) {
        const float x = to_float(row[c]);
        if (!std::isfinite(x)) {
          *hit = {tensor, false, i, c, x};
          return true;
        }
        sum += static_cast<double>(x) * x;
      }
      *norm2 = std::max(*norm2, sum);
      if (sum <= kLimit * kLimit) return false;
      *hit = {tensor, true, i, 0, std::sqrt(sum)};
      return true;
    };
    auto check_values = [&](const T* row, std::int64_t j, Hit* hit) {
      for (std::int64_t c = 0; c < pr.dv; ++c) {
        const float x = to_float(row[c]);
        if (std::isfinite(x) && std::fabs(x) <= kLimit) continue;
        *hit = {2, std::isfinite(x), j, c, std::isfinite(x) ? std::fabs(x) : x};
        return true;
      }
      return false;
    };
    parallel_for(tasks, pr.threads, [&](std::int64_t t) {
      const std::int64_t bh = t / per_head, block = t % per_head;
      const std::int64_t b = bh / pr.H, h = bh % pr.H;
      Hit& hit = hits[static_cast<std::size_t>(t)];
      double& norm2 = max_norm2[static_cast<std::size_t>(t)];
      if (block < q_blocks) {
        for (std::int64_t i = block * kRows; i < std::min(pr.Nq, (block + 1) * kRows); ++i)
          if (pr.query_active(b, i) && check_row(0, pr.q_row<T>(b, h, i), i, &norm2, &hit)) return;
        return;
      }
      const std::int64_t kb = block - q_blocks;
      for (std::int64_t j = kb * kRows; j < std::min(pr.Nk, (kb + 1) * kRows); ++j) {
        if (!pr.key_visible(b, j)) continue;
        if (check_row(1, pr.k_row<T>(b, h, j), j, &norm2, &hit) || check_values(pr.v_row<T>(b, h, j), j, &hit))
          return;
      }
    });
  });
  static constexpr const char* kNames[] = {"params.q", "params.k", "params.v"};
  double r2 = 0;
  for (std::int64_t t = 0; t < tasks; ++t) {
    r2 = std::max(r2, max_norm2[static_cast<std::size_t>(t)]);
    const Hit& hit = hits[static_cast<std::size_t>(t)];
    if (hit.tensor < 0) continue;
    std::ostringstream where;
    const std::int64_t bh = t / per_head;
    where << kNames[hit.tensor] << "[" << bh / pr.H << ", " << bh % pr.H << ", " << hit.row;
    if (!hit.finite || hit.tensor == 2) where << ", " << hit.col;
    where << "]";
    if (!hit.finite)
      fail(where.str(), str(hit.value), "non-finite input (set params.check_finite = false to skip this scan)");
    fail(where.str() + (hit.tensor == 2 ? "" : " row norm"), str(hit.value),
         "above 2^32, outside the float range the methods compute in (rescale the input; "
         "params.check_finite = false skips this check)");
  }
  const double bound = std::fabs(static_cast<double>(pr.scale)) * r2;
  if (bound > kLimit) {
    std::ostringstream why;
    why << "|scale| * R^2 = " << bound << " is above 2^32 (R = " << std::sqrt(r2)
        << ", the largest Q or K row norm): scores would leave the float range the methods compute "
           "in (params.check_finite = false skips this check)";
    fail("params.scale", str(static_cast<double>(pr.scale)), why.str());
  }
}

}  // namespace smyrf::detail
