#include "common/problem.h"

#include <algorithm>

#include "common/parallel.h"

namespace smyrf::detail {

void zero_unattended_rows(const Problem& pr, const TokenLists& lists) {
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t t) {
    const std::int64_t b = t / pr.H, h = t % pr.H;
    const bool no_keys = lists.k_count[b] == 0;
    for (std::int64_t i = 0; i < pr.Nq; ++i)
      if (no_keys || !pr.query_active(b, i)) std::fill_n(pr.o_row(b, h, i), pr.dv, 0.0f);
  });
}

}  // namespace smyrf::detail
