// Sparse attention's oracle, written from the definition in smyrf.h (SparseConfig): for each
// query, a plain predicate over every key j = 0..Nk-1, then softmax in double. It shares
// nothing with the fast path's groups, key lists or masks; only BigBird's random blocks come
// from the shared draws (src/spec/draws.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/problem.h"
#include "reference/common.h"
#include "reference/reference.h"
#include "spec/draws.h"

namespace smyrf::reference {
namespace {

using detail::Problem;
using detail::to_float;

std::int64_t fdiv(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if (q * b > a) --q;  // round towards -infinity
  return q;
}
std::int64_t fmod_pos(std::int64_t a, std::int64_t b) { return a - fdiv(a, b) * b; }

// Query i's pattern, from the definition: p = i + Nk - Nq its position in key coordinates.
struct QueryPattern {
  SparseConfig c;
  std::int64_t p = 0;
  std::vector<std::int64_t> random;  // BigBird: the query block's random key blocks

  QueryPattern(const SparseConfig& config, std::uint64_t seed, std::int64_t head, std::int64_t nq,
               std::int64_t nk, std::int64_t i)
      : c(config), p(i + nk - nq) {
    if (c.pattern == SparsePattern::bigbird) {
      const std::int64_t n_blocks = (nk + c.block_size - 1) / c.block_size;
      random.resize(static_cast<std::size_t>(n_blocks) + 1);
      std::vector<std::int64_t> work(spec::bigbird_work_size(n_blocks));
      const std::int64_t r =
          spec::bigbird_random_blocks(seed, head, fdiv(p, c.block_size), n_blocks, c.global_blocks,
                                c.random_blocks, random.data(), work.data());
      random.resize(static_cast<std::size_t>(r));
    }
  }

  bool sees(std::int64_t j) const {
    const std::int64_t dist = p > j ? p - j : j - p;
    const std::int64_t w = c.window;
    switch (c.pattern) {
      case SparsePattern::local: return dist <= w;
      case SparsePattern::dilated: return dist <= w * c.dilation && (p - j) % c.dilation == 0;
      case SparsePattern::strided: return dist <= w || (p - j) % c.stride == 0;
      case SparsePattern::fixed:
        return fdiv(j, c.stride) == fdiv(p, c.stride) || j % c.stride >= c.stride - c.summary;
      case SparsePattern::longformer:
        return dist <= w || j < c.global_tokens || (p >= 0 && p < c.global_tokens);
      case SparsePattern::bigbird: {
        const std::int64_t qb = fdiv(p, c.block_size), kb = j / c.block_size;
        if (kb >= qb - 1 && kb <= qb + 1) return true;
        if (kb < c.global_blocks) return true;
        if (qb >= 0 && qb < c.global_blocks) return true;
        return std::find(random.begin(), random.end(), kb) != random.end();
      }
      case SparsePattern::axial_rows: return fdiv(p, c.width) == j / c.width;
      case SparsePattern::axial_columns: return fmod_pos(p, c.width) == j % c.width;
      case SparsePattern::criss_cross:
        return fdiv(p, c.width) == j / c.width || fmod_pos(p, c.width) == j % c.width;
    }
    return false;
  }
};

std::vector<std::int32_t> keys_of(const Problem& pr, const SparseConfig& config, std::int64_t b,
                                  std::int64_t h, std::int64_t i) {
  std::vector<std::int32_t> keys;
  if (!pr.query_active(b, i)) return keys;
  const QueryPattern pattern(config, pr.p->seed, h, pr.Nq, pr.Nk, i);
  for (std::int64_t j = 0; j < pr.Nk; ++j) {
    if (!pr.key_visible(b, j)) continue;
    if (pr.p->causal && j > pattern.p) continue;
    if (pattern.sees(j)) keys.push_back(static_cast<std::int32_t>(j));
  }
  return keys;
}

template <class T>
void attend(const Problem& pr, const SparseConfig& config, Output& out) {
  const double ninf = -std::numeric_limits<double>::infinity();
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::size_t row = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        double* o = out.o.data() + row * static_cast<std::size_t>(pr.dv);
        const std::vector<std::int32_t> keys = keys_of(pr, config, b, h, i);
        if (keys.empty()) {
          out.lse[row] = ninf;
          continue;
        }
        const T* q = pr.q_row<T>(b, h, i);
        std::vector<double> logit(keys.size());
        double mx = ninf;
        for (std::size_t t = 0; t < keys.size(); ++t) {
          const T* k = pr.k_row<T>(b, h, keys[t]);
          double dot = 0;
          for (std::int64_t x = 0; x < pr.d; ++x)
            dot += static_cast<double>(to_float(q[x])) * static_cast<double>(to_float(k[x]));
          logit[t] = static_cast<double>(pr.scale) * dot;
          mx = std::max(mx, logit[t]);
        }
        double denom = 0;
        for (std::size_t t = 0; t < keys.size(); ++t) {
          const double w = std::exp(logit[t] - mx);
          denom += w;
          const T* v = pr.v_row<T>(b, h, keys[t]);
          for (std::int64_t x = 0; x < pr.dv; ++x) o[x] += w * static_cast<double>(to_float(v[x]));
        }
        for (std::int64_t x = 0; x < pr.dv; ++x) o[x] /= denom;
        out.lse[row] = mx + std::log(denom);
      }
}

}  // namespace

std::vector<std::int32_t> key_set(const AttentionParams& params, const SparseConfig& config,
                                  std::int64_t b, std::int64_t h, std::int64_t i) {
  const Problem pr = detail::reference_problem(params, config);
  return keys_of(pr, config, b, h, i);
}

Output attention(const AttentionParams& params, const SparseConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  detail::with_input_type(pr.dtype, [&](auto tag) { attend<decltype(tag)>(pr, config, out); });
  return out;
}

}  // namespace smyrf::reference
