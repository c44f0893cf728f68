// Reformer's oracle, written from the definition in smyrf.h (ReformerConfig), independently of
// the fast path: plain loops, its own hashing, std::sort based ordering, its own chunking, an
// explicit multiset of (round, key) per query. Shares with the fast path only the rotations of
// src/spec/draws.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "reference/common.h"
#include "reference/reference.h"
#include "spec/draws.h"

namespace smyrf::reference {
namespace {

// Everything the definition computes: the buckets and orders, the set sizes and the output.
struct Oracle {
  ReformerBuckets buckets;
  std::vector<std::int64_t> set_size;  // as Output::set_size
  std::vector<double> o, lse;          // as Output::o, Output::lse
};

// Element t of a row as double (bf16: the upper half of a float).
double element(const AttentionParams& p, const void* base, std::int64_t offset) {
  if (p.dtype == DType::bf16) {
    const std::uint32_t bits = static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(base)[offset]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
  return static_cast<const float*>(base)[offset];
}

std::vector<double> read_row(const AttentionParams& p, const void* base, std::int64_t bs,
                             std::int64_t hs, std::int64_t rs, std::int64_t b, std::int64_t h,
                             std::int64_t i, std::int64_t n) {
  std::vector<double> row(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < n; ++t) row[static_cast<std::size_t>(t)] = element(p, base, b * bs + h * hs + i * rs + t);
  return row;
}

// The bucket of x under rotation rot [d][half] (row-major), as smyrf.h defines it.
std::int32_t bucket_of(const std::vector<double>& x, const std::vector<double>& rot, std::int64_t half) {
  const std::int64_t d = static_cast<std::int64_t>(x.size());
  std::vector<double> cand(static_cast<std::size_t>(2 * half));
  for (std::int64_t c = 0; c < half; ++c) {
    double y = 0.0;
    for (std::int64_t t = 0; t < d; ++t) y = std::fma(x[static_cast<std::size_t>(t)], rot[static_cast<std::size_t>(t * half + c)], y);
    cand[static_cast<std::size_t>(c)] = y;
    cand[static_cast<std::size_t>(half + c)] = -y;
  }
  std::int32_t best = 0;
  for (std::int64_t c = 1; c < 2 * half; ++c)
    if (cand[static_cast<std::size_t>(c)] > cand[static_cast<std::size_t>(best)]) best = static_cast<std::int32_t>(c);
  return best;
}

// The definition on p's inputs (any strides, f32 or bf16, masks, causal, scale, seed); the
// softmax part only when `attend`.
Oracle run(const AttentionParams& p, const ReformerConfig& config, bool attend) {
  Oracle full;
  ReformerBuckets& out = full.buckets;
  const std::int64_t B = p.batch, H = p.heads, Nq = p.nq, Nk = p.nk, d = p.d, dv = p.dv;
  const int R = config.n_hashes;
  const std::int64_t half = config.n_buckets / 2;
  const bool shared = config.shared_qk;
  const double scale = p.scale ? static_cast<double>(*p.scale)
                               : static_cast<double>(static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))));
  out.B = B;
  out.H = H;
  out.Nq = Nq;
  out.Nk = Nk;
  out.rounds = R;
  out.q_bucket.assign(static_cast<std::size_t>(B * H * R * Nq), -1);
  out.k_bucket.assign(static_cast<std::size_t>(B * H * R * Nk), -1);
  out.q_sorted = out.q_bucket;
  out.k_sorted = out.k_bucket;
  full.set_size.assign(static_cast<std::size_t>(B * H * R * Nq), 0);
  full.o.assign(static_cast<std::size_t>(B * H * Nq * dv), 0.0);
  full.lse.assign(static_cast<std::size_t>(B * H * Nq), -std::numeric_limits<double>::infinity());
  out.q_count.assign(static_cast<std::size_t>(B), 0);
  out.k_count.assign(static_cast<std::size_t>(B), 0);
  out.n_chunks.assign(static_cast<std::size_t>(B), 0);

  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> queries, keys;  // ascending positions
    for (std::int64_t i = 0; i < Nq; ++i)
      if (p.query_mask == nullptr || p.query_mask[b * p.query_mask_batch_stride + i] != 0)
        queries.push_back(static_cast<std::int32_t>(i));
    for (std::int64_t j = 0; j < Nk; ++j)
      if (p.key_mask == nullptr || p.key_mask[b * p.key_mask_batch_stride + j] != 0)
        keys.push_back(static_cast<std::int32_t>(j));
    const std::int64_t nq = static_cast<std::int64_t>(queries.size());
    const std::int64_t nk = static_cast<std::int64_t>(keys.size());
    out.q_count[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(nq);
    out.k_count[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(nk);
    std::int64_t C = 0;
    if (nq > 0 && nk > 0) {
      const std::int64_t n = std::max(nq, nk);
      C = (n + config.chunk_size - 1) / config.chunk_size;
      if (C < 1) C = 1;
    }
    out.n_chunks[static_cast<std::size_t>(b)] = C;

    for (std::int64_t h = 0; h < H; ++h) {
      // Rows in double: queries, keys (shared_qk: the normalised q rows), values.
      std::vector<std::vector<double>> qrow(static_cast<std::size_t>(Nq)), krow(static_cast<std::size_t>(Nk)),
          vrow(static_cast<std::size_t>(Nk));
      for (std::int64_t i = 0; i < Nq; ++i)
        qrow[static_cast<std::size_t>(i)] = read_row(p, p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride, b, h, i, d);
      for (std::int64_t j : keys) {
        vrow[static_cast<std::size_t>(j)] = read_row(p, p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride, b, h, j, dv);
        if (shared) {
          const std::vector<double>& q = qrow[static_cast<std::size_t>(j)];
          double n2 = 0;
          for (double x : q) n2 += x * x;
          std::vector<double> k(static_cast<std::size_t>(d), 0.0);
          if (n2 > 0)
            for (std::int64_t t = 0; t < d; ++t) k[static_cast<std::size_t>(t)] = q[static_cast<std::size_t>(t)] / std::sqrt(n2);
          krow[static_cast<std::size_t>(j)] = k;
        } else {
          krow[static_cast<std::size_t>(j)] = read_row(p, p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride, b, h, j, d);
        }
      }

      // Per query: the multiset of keys over all rounds (a key once per round that has it).
      std::vector<std::vector<std::int32_t>> multiset(static_cast<std::size_t>(Nq));
      for (int r = 0; r < R; ++r) {
        std::vector<double> rot(static_cast<std::size_t>(d * half));
        for (std::int64_t t = 0; t < d; ++t)
          for (std::int64_t c = 0; c < half; ++c)
            rot[static_cast<std::size_t>(t * half + c)] = spec::reformer_rotation(p.seed, h, r, half, t, c);
        const std::size_t base_q = static_cast<std::size_t>(((b * H + h) * R + r) * Nq);
        const std::size_t base_k = static_cast<std::size_t>(((b * H + h) * R + r) * Nk);
        std::vector<std::int32_t> qb(static_cast<std::size_t>(Nq), -1), kb(static_cast<std::size_t>(Nk), -1);
        for (std::int32_t i : queries) qb[static_cast<std::size_t>(i)] = bucket_of(qrow[static_cast<std::size_t>(i)], rot, half);
        for (std::int32_t j : keys) {
          const std::vector<double> x = shared ? qrow[static_cast<std::size_t>(j)]
                                               : read_row(p, p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride, b, h, j, d);
          kb[static_cast<std::size_t>(j)] = bucket_of(x, rot, half);
        }
        std::vector<std::int32_t> qs = queries, ks = keys;
        std::stable_sort(qs.begin(), qs.end(), [&](std::int32_t x, std::int32_t y) { return qb[static_cast<std::size_t>(x)] < qb[static_cast<std::size_t>(y)]; });
        std::stable_sort(ks.begin(), ks.end(), [&](std::int32_t x, std::int32_t y) { return kb[static_cast<std::size_t>(x)] < kb[static_cast<std::size_t>(y)]; });
        for (std::int64_t i = 0; i < Nq; ++i) out.q_bucket[base_q + static_cast<std::size_t>(i)] = qb[static_cast<std::size_t>(i)];
        for (std::int64_t j = 0; j < Nk; ++j) out.k_bucket[base_k + static_cast<std::size_t>(j)] = kb[static_cast<std::size_t>(j)];
        for (std::int64_t t = 0; t < nq; ++t) out.q_sorted[base_q + static_cast<std::size_t>(t)] = qs[static_cast<std::size_t>(t)];
        for (std::int64_t t = 0; t < nk; ++t) out.k_sorted[base_k + static_cast<std::size_t>(t)] = ks[static_cast<std::size_t>(t)];

        for (std::int64_t c = 0; c < C; ++c) {
          std::set<std::int32_t> set;
          for (const std::int64_t kc : {c, (c - 1 + C) % C}) {
            const std::int64_t lo = kc * nk / C;
            const std::int64_t hi = std::max((kc + 1) * nk / C, lo + 1);
            for (std::int64_t t = lo; t < hi; ++t) set.insert(ks[static_cast<std::size_t>(t)]);
          }
          for (std::int64_t t = c * nq / C; t < (c + 1) * nq / C; ++t) {
            const std::int32_t i = qs[static_cast<std::size_t>(t)];
            std::vector<std::int32_t> seen;
            for (const std::int32_t j : set)
              if (!p.causal || j <= i + (Nk - Nq)) seen.push_back(j);
            if (shared) {
              bool other = false;
              for (const std::int32_t j : seen) other = other || j != i;
              if (other) seen.erase(std::remove(seen.begin(), seen.end(), i), seen.end());
            }
            full.set_size[base_q + static_cast<std::size_t>(i)] = static_cast<std::int64_t>(seen.size());
            for (const std::int32_t j : seen) multiset[static_cast<std::size_t>(i)].push_back(j);
          }
        }
      }

      // Softmax over each query's multiset, in double.
      for (const std::int32_t i : queries) {
        if (!attend) break;
        const std::vector<std::int32_t>& ms = multiset[static_cast<std::size_t>(i)];
        if (ms.empty()) continue;
        std::vector<double> s(ms.size());
        double mx = -std::numeric_limits<double>::infinity();
        for (std::size_t e = 0; e < ms.size(); ++e) {
          double dot = 0;
          for (std::int64_t t = 0; t < d; ++t)
            dot += qrow[static_cast<std::size_t>(i)][static_cast<std::size_t>(t)] * krow[static_cast<std::size_t>(ms[e])][static_cast<std::size_t>(t)];
          s[e] = scale * dot;
          mx = std::max(mx, s[e]);
        }
        double sum = 0;
        for (const double x : s) sum += std::exp(x - mx);
        const double lse = mx + std::log(sum);
        full.lse[static_cast<std::size_t>((b * H + h) * Nq + i)] = lse;
        double* o = full.o.data() + ((b * H + h) * Nq + i) * dv;
        for (std::size_t e = 0; e < ms.size(); ++e) {
          const double w = std::exp(s[e] - lse);
          for (std::int64_t c = 0; c < dv; ++c) o[c] += w * vrow[static_cast<std::size_t>(ms[e])][static_cast<std::size_t>(c)];
        }
      }
    }
  }
  return full;
}

}  // namespace

ReformerBuckets buckets(const AttentionParams& params, const ReformerConfig& config) {
  detail::reference_problem(params, config);
  return run(params, config, false).buckets;
}

Output attention(const AttentionParams& params, const ReformerConfig& config) {
  const detail::Problem pr = detail::reference_problem(params, config);
  Oracle full = run(params, config, true);
  Output out = detail::reference_output(pr);
  out.o = std::move(full.o);
  out.lse = std::move(full.lse);
  out.rounds = config.n_hashes;
  out.set_size = std::move(full.set_size);
  return out;
}

}  // namespace smyrf::reference
