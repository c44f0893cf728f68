#include "common/problem.h"

#include <algorithm>
#include <cmath>

#include "common/parallel.h"

namespace smyrf::detail {

Problem checked_problem(const AttentionParams& p) {
  Problem pr;
  pr.p = &p;
  pr.B = p.batch;
  pr.H = p.heads;
  pr.Nq = p.nq;
  pr.Nk = p.nk;
  pr.d = p.d;
  pr.dv = p.dv;
  pr.scale = p.scale ? *p.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.d)));
  pr.threads = resolve_threads(p.num_threads);
  pr.dtype = p.dtype;
  return pr;
}

void zero_unattended_rows(const Problem& pr, const TokenLists& lists) {
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t t) {
    const std::int64_t b = t / pr.H, h = t % pr.H;
    const bool no_keys = lists.k_count[b] == 0;
    for (std::int64_t i = 0; i < pr.Nq; ++i)
      if (no_keys || !pr.query_active(b, i)) std::fill_n(pr.o_row(b, h, i), pr.dv, 0.0f);
  });
}

}  // namespace smyrf::detail
