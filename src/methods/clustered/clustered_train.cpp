// Training of clustered and improved clustered attention: the f32 backward and the
// double-precision definition (forward and backward), with the clusters and the top keys T_c
// held constant (the rule is in smyrf/methods/clustered.h, "Training").
//
// Per cluster c (members M_c, centroid qbar_c = their mean, A_c its softmax row over the
// visible keys, m_c = sum of A_c over T_c, r_c = sum of A_c(j) v_j outside T_c), a member's
// output is O_i = w_i V_T + r_c with w_ij = exp(s_ij - lse_i) = m_c softmax_T(s_i)_j. With
// g_ij = dO_i . v_j and E_i = sum_T w_ij g_ij = dO_i . (O_i - r_c):
//   members:  dS_ij = w_ij (g_ij - E_i / m_c), dV_j += w_ij dO_i, dQ_i += scale dS_ij k_j,
//             dK_j += scale dS_ij q_i (the group engine with D_i = E_i / m_c);
//   centroid: the loss sees A_c through m_c (with dm_c = sum_i E_i / m_c) and r_c (with
//             dr_c = sum_i dO_i): G_j = dm_c on T_c and dr_c . v_j elsewhere, D_c = sum_j
//             A_c(j) G_j = m_c dm_c + dr_c . r_c, dS_cj = A_c(j) (G_j - D_c); dV_j += A_c(j) dr_c
//             outside T_c, dK_j += scale dS_cj qbar_c, dqbar_c = scale sum_j dS_cj k_j, and
//             dQ_i += dqbar_c / |M_c| for every member (the centroid is the members' mean).
// Plain clustered attention is the case T_c = {} (m_c = 0, no member part).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "common/problem.h"
#include "common/timer.h"
#include "methods/clustered/clustered.h"
#include "methods/train/train.h"
#include "spec/draws.h"

namespace smyrf::detail {
namespace {

// The live clusters of every (b, h) with visible keys, in cluster order: members and T_c in
// ascending positions.
struct Clusters {
  std::vector<std::size_t> begin;  // [BH + 1]: the clusters of bh are [begin[bh], begin[bh + 1])
  std::vector<std::vector<std::int32_t>> members, top;
  std::vector<std::vector<std::int32_t>> keys;  // [B]: the visible keys of b, ascending
};

Clusters plan_clusters(const Problem& pr, const ClusteredConfig& config) {
  const ClusteredInspection ins = clustered_structure(pr, config);
  Clusters out;
  out.keys.resize(static_cast<std::size_t>(pr.B));
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t j = 0; j < pr.Nk; ++j)
      if (pr.key_visible(b, j)) out.keys[static_cast<std::size_t>(b)].push_back(static_cast<std::int32_t>(j));
  out.begin.push_back(0);
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    const std::int64_t b = bh / pr.H;
    if (!out.keys[static_cast<std::size_t>(b)].empty()) {
      std::vector<std::vector<std::int32_t>> by_cluster(static_cast<std::size_t>(ins.max_clusters));
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::int32_t c = ins.cluster[static_cast<std::size_t>(bh * pr.Nq + i)];
        if (c >= 0) by_cluster[static_cast<std::size_t>(c)].push_back(static_cast<std::int32_t>(i));
      }
      for (std::size_t c = 0; c < by_cluster.size(); ++c) {
        if (by_cluster[c].empty()) continue;
        out.members.push_back(std::move(by_cluster[c]));
        out.top.push_back(ins.top_keys[static_cast<std::size_t>(bh * ins.max_clusters) + c]);
      }
    }
    out.begin.push_back(out.members.size());
  }
  return out;
}

// Flags over the visible keys of b (index into Clusters::keys): 1 for the keys of T_c.
void mark_top(const std::vector<std::int32_t>& keys, const std::vector<std::int32_t>& top,
              std::vector<std::uint8_t>& in_top) {
  in_top.assign(keys.size(), 0);
  std::size_t t = 0;
  for (std::size_t j = 0; j < keys.size() && t < top.size(); ++j)
    if (keys[j] == top[t]) {
      in_top[j] = 1;
      ++t;
    }
}

// A centroid's attention row in double: A over the visible keys, m_c, r_c (with the dropout
// factors f of the keys outside T_c) and its logsumexp.
struct CentroidRow {
  std::vector<double> a, f, r;
  double mass = 0.0, lse = 0.0;
};

// The dropout stream of cluster c's shared weights: round 1 of its first member (round 0 holds
// the members' own weights on T_c).
std::uint64_t centroid_stream(const spec::Dropout& drop, std::int64_t b, std::int64_t h,
                              const std::vector<std::int32_t>& members) {
  return drop.active() ? drop.row(b, h, 1, members.front()) : 0;
}

// keys: the visible keys' positions; key(j) and value(j) give the rows (float or double) of
// visible key j of the list.
template <class KeyRow, class ValueRow>
void centroid_row(const std::vector<double>& qbar, double scale, const std::vector<std::int32_t>& keys,
                  const std::vector<std::uint8_t>& in_top, const spec::Dropout& drop, std::uint64_t stream,
                  const KeyRow& key, const ValueRow& value, std::int64_t d, std::int64_t dv, CentroidRow& row) {
  const std::size_t nk = keys.size();
  row.a.assign(nk, 0.0);
  row.f.assign(nk, 1.0);
  row.r.assign(static_cast<std::size_t>(dv), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < nk; ++j) {
    const auto* k = key(j);
    double s = 0.0;
    for (std::int64_t t = 0; t < d; ++t) s += qbar[static_cast<std::size_t>(t)] * static_cast<double>(k[t]);
    row.a[j] = scale * s;
    mx = std::max(mx, row.a[j]);
  }
  double z = 0.0;
  for (std::size_t j = 0; j < nk; ++j) z += std::exp(row.a[j] - mx);
  row.lse = mx + std::log(z);
  row.mass = 0.0;
  for (std::size_t j = 0; j < nk; ++j) {
    row.a[j] = std::exp(row.a[j] - row.lse);
    if (in_top[j]) {
      row.mass += row.a[j];
      continue;
    }
    if (drop.active()) row.f[j] = static_cast<double>(drop.factor(stream, keys[j]));
    const double w = row.a[j] * row.f[j];
    const auto* v = value(j);
    for (std::int64_t c = 0; c < dv; ++c) row.r[static_cast<std::size_t>(c)] += w * static_cast<double>(v[c]);
  }
}

// The centroid part of the rule (file comment): adds to dk [nk * d] and dv [nk * dv] (indexed
// by the visible key's place in the list) and returns dqbar_c. e_sum = sum over the members of
// E_i, dr = sum over the members of dO_i.
template <class KeyRow, class ValueRow>
std::vector<double> centroid_backward(const CentroidRow& row, const std::vector<double>& qbar, double scale,
                                      const std::vector<std::uint8_t>& in_top, double e_sum,
                                      const std::vector<double>& dr, const KeyRow& key, const ValueRow& value,
                                      std::int64_t d, std::int64_t dv, double* dk, double* dvv) {
  const std::size_t nk = row.a.size();
  const double dm = row.mass > 0.0 ? e_sum / row.mass : 0.0;
  double D = row.mass * dm;
  for (std::int64_t c = 0; c < dv; ++c) D += dr[static_cast<std::size_t>(c)] * row.r[static_cast<std::size_t>(c)];
  std::vector<double> dq(static_cast<std::size_t>(d), 0.0);
  for (std::size_t j = 0; j < nk; ++j) {
    const auto* v = value(j);
    double g = dm;
    if (!in_top[j]) {
      g = 0.0;
      for (std::int64_t c = 0; c < dv; ++c) g += dr[static_cast<std::size_t>(c)] * static_cast<double>(v[c]);
      g *= row.f[j];
      const double w = row.a[j] * row.f[j];
      for (std::int64_t c = 0; c < dv; ++c) dvv[j * static_cast<std::size_t>(dv) + static_cast<std::size_t>(c)] += w * dr[static_cast<std::size_t>(c)];
    }
    const double ds = scale * row.a[j] * (g - D);
    const auto* k = key(j);
    for (std::int64_t t = 0; t < d; ++t) {
      dk[j * static_cast<std::size_t>(d) + static_cast<std::size_t>(t)] += ds * qbar[static_cast<std::size_t>(t)];
      dq[static_cast<std::size_t>(t)] += ds * static_cast<double>(k[t]);
    }
  }
  return dq;
}

// The forward's centroid query: the members' rows summed in double in position order, divided
// by their count, rounded to f32.
std::vector<double> rounded_mean(const Problem& pr, std::int64_t b, std::int64_t h,
                                 const std::vector<std::int32_t>& members) {
  std::vector<double> qbar(static_cast<std::size_t>(pr.d), 0.0);
  for (std::int32_t i : members) {
    const float* q = pr.q_row<float>(b, h, i);
    for (std::int64_t t = 0; t < pr.d; ++t) qbar[static_cast<std::size_t>(t)] += static_cast<double>(q[t]);
  }
  for (double& x : qbar) x = static_cast<double>(static_cast<float>(x / static_cast<double>(members.size())));
  return qbar;
}

// The member groups of improved clustered attention: each cluster's members against T_c.
TrainGroups<CausalPairs> member_groups(const Problem& pr, const Clusters& cl) {
  TrainGroups<CausalPairs> set;
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh)
    for (std::size_t u = cl.begin[static_cast<std::size_t>(bh)]; u < cl.begin[static_cast<std::size_t>(bh) + 1]; ++u)
      set.add(bh / pr.H, bh % pr.H, 0, cl.members[u].data(), cl.members[u].size(), cl.top[u].data(),
              cl.top[u].size(), CausalPairs{});
  set.finish();
  return set;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// f32 dropout forward: the forward, then each member's row rebuilt: its own weights on T_c
// dropped (the group engine, from its lse) plus r_c with the centroid's shared weights dropped.
void clustered_dropout_forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace) {
  const Clusters cl = plan_clusters(pr, config);
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  const double scale = static_cast<double>(pr.scale);
  std::vector<std::vector<double>> resid(cl.members.size());
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::vector<std::int32_t>& keys = cl.keys[static_cast<std::size_t>(b)];
    auto key = [&](std::size_t j) { return pr.k_row<float>(b, h, keys[j]); };
    auto value = [&](std::size_t j) { return pr.v_row<float>(b, h, keys[j]); };
    std::vector<std::uint8_t> in_top;
    CentroidRow row;
    for (std::size_t u = cl.begin[static_cast<std::size_t>(bh)]; u < cl.begin[static_cast<std::size_t>(bh) + 1]; ++u) {
      mark_top(keys, cl.top[u], in_top);
      centroid_row(rounded_mean(pr, b, h, cl.members[u]), scale, keys, in_top, drop,
                   centroid_stream(drop, b, h, cl.members[u]), key, value, pr.d, pr.dv, row);
      resid[u] = row.r;
    }
  });
  if (config.topk > 0) groups_dropout_forward(pr, pr.p->lse, member_groups(pr, cl), workspace, run_clustered_groups);
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    for (std::size_t u = cl.begin[static_cast<std::size_t>(bh)]; u < cl.begin[static_cast<std::size_t>(bh) + 1]; ++u)
      for (std::int32_t i : cl.members[u]) {
        float* o = pr.o_row(b, h, i);
        for (std::int64_t c = 0; c < pr.dv; ++c) {
          const float r = static_cast<float>(resid[u][static_cast<std::size_t>(c)]);
          o[c] = config.topk > 0 ? o[c] + r : r;
        }
      }
  });
}

// ---------------------------------------------------------------------------------------
// f32 backward: the centroid parts on the tile kernels (clustered_backward.cpp), then the
// members against T_c on the group engine with D_i = E_i / m_c (improved only).
RunInfo clustered_backward(const Problem& pr, const GradientParams& g, const ClusteredConfig& config,
                           Workspace* workspace) {
  Timer timer;
  const AttentionParams& p = *pr.p;
  zero_gradients(pr, g);
  const Clusters cl = plan_clusters(pr, config);
  const std::int64_t d = pr.d, dv = pr.dv;
  const spec::Dropout drop(p.dropout, p.seed);
  const std::size_t U = cl.members.size();
  std::vector<float> qbar(U * static_cast<std::size_t>(d)), dr(U * static_cast<std::size_t>(dv));
  std::vector<std::vector<std::int32_t>> top_index(U);
  std::vector<std::uint64_t> stream(U);
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::vector<std::int32_t>& keys = cl.keys[static_cast<std::size_t>(b)];
    std::vector<double> sum(static_cast<std::size_t>(dv));
    for (std::size_t u = cl.begin[static_cast<std::size_t>(bh)]; u < cl.begin[static_cast<std::size_t>(bh) + 1]; ++u) {
      const std::vector<std::int32_t>& members = cl.members[u];
      const std::vector<double> mean = rounded_mean(pr, b, h, members);
      for (std::int64_t t = 0; t < d; ++t) qbar[u * static_cast<std::size_t>(d) + static_cast<std::size_t>(t)] = static_cast<float>(mean[static_cast<std::size_t>(t)]);
      std::fill(sum.begin(), sum.end(), 0.0);
      for (std::int32_t i : members) {
        const float* go = g.grad_o + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
        for (std::int64_t c = 0; c < dv; ++c) sum[static_cast<std::size_t>(c)] += static_cast<double>(go[c]);
      }
      for (std::int64_t c = 0; c < dv; ++c) dr[u * static_cast<std::size_t>(dv) + static_cast<std::size_t>(c)] = static_cast<float>(sum[static_cast<std::size_t>(c)]);
      for (std::int32_t j : cl.top[u])
        top_index[u].push_back(static_cast<std::int32_t>(std::lower_bound(keys.begin(), keys.end(), j) - keys.begin()));
      stream[u] = centroid_stream(drop, b, h, members);
    }
  });
  std::vector<float> delta(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), 0.0f);
  ClusteredCentroidGrad a;
  a.pr = &pr;
  a.g = &g;
  a.dropout = p.dropout;
  a.seed = p.seed;
  a.begin = cl.begin.data();
  a.members = cl.members.data();
  a.top_index = top_index.data();
  a.keys = cl.keys.data();
  a.stream = stream.data();
  a.qbar = qbar.data();
  a.dr = dr.data();
  a.delta = delta.data();
  clustered_centroid_backward(a);
  RunInfo info;
  if (config.topk > 0) info = groups_backward_add(pr, g, member_groups(pr, cl), delta.data(), workspace, run_clustered_groups);
  info.seconds_total = info.attention.seconds = timer.seconds();
  return info;
}

// ---------------------------------------------------------------------------------------
// The double-precision definition on contiguous tensors: the clusters and T_c of the f32 path
// (from the inputs rounded to f32), the centroid the exact mean in double.
namespace {

struct DoubleView {
  const Problem* pr;
  const DoubleTensors* in;
  const double* q(std::int64_t bh, std::int64_t i) const { return in->q + (bh * pr->Nq + i) * pr->d; }
  const double* k(std::int64_t bh, std::int64_t j) const { return in->k + (bh * pr->Nk + j) * pr->d; }
  const double* v(std::int64_t bh, std::int64_t j) const { return in->v + (bh * pr->Nk + j) * pr->dv; }
};

std::vector<double> mean_query(const DoubleView& x, std::int64_t bh, const std::vector<std::int32_t>& members) {
  std::vector<double> qbar(static_cast<std::size_t>(x.pr->d), 0.0);
  for (std::int32_t i : members)
    for (std::int64_t t = 0; t < x.pr->d; ++t) qbar[static_cast<std::size_t>(t)] += x.q(bh, i)[t];
  for (double& e : qbar) e /= static_cast<double>(members.size());
  return qbar;
}

// Member i's logits over T_c (positions), scale q_i . k_j.
std::vector<double> member_logits(const DoubleView& x, std::int64_t bh, std::int32_t i,
                                  const std::vector<std::int32_t>& top, double scale) {
  std::vector<double> s(top.size());
  for (std::size_t u = 0; u < top.size(); ++u) {
    double dot = 0.0;
    for (std::int64_t t = 0; t < x.pr->d; ++t) dot += x.q(bh, i)[t] * x.k(bh, top[u])[t];
    s[u] = scale * dot;
  }
  return s;
}

}  // namespace

void clustered_forward_f64(const Problem& pr, const ClusteredConfig& config, const DoubleTensors& in,
                           double* o, double* lse) {
  const Clusters cl = plan_clusters(pr, config);
  const DoubleView x{&pr, &in};
  const std::int64_t dv = pr.dv;
  const double scale = static_cast<double>(pr.scale);
  std::fill_n(o, pr.B * pr.H * pr.Nq * dv, 0.0);
  if (lse != nullptr) std::fill_n(lse, pr.B * pr.H * pr.Nq, -std::numeric_limits<double>::infinity());
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::vector<std::int32_t>& keys = cl.keys[static_cast<std::size_t>(b)];
    auto key = [&](std::size_t j) { return x.k(bh, keys[j]); };
    auto value = [&](std::size_t j) { return x.v(bh, keys[j]); };
    std::vector<std::uint8_t> in_top;
    CentroidRow row;
    for (std::size_t u = cl.begin[static_cast<std::size_t>(bh)]; u < cl.begin[static_cast<std::size_t>(bh) + 1]; ++u) {
      const std::vector<std::int32_t>& top = cl.top[u];
      mark_top(keys, top, in_top);
      centroid_row(mean_query(x, bh, cl.members[u]), scale, keys, in_top, drop,
                   centroid_stream(drop, b, h, cl.members[u]), key, value, pr.d, dv, row);
      for (std::int32_t i : cl.members[u]) {
        double* out = o + (bh * pr.Nq + i) * dv;
        for (std::int64_t c = 0; c < dv; ++c) out[c] = row.r[static_cast<std::size_t>(c)];
        double l = row.lse;
        if (!top.empty()) {
          // O_i = m_c softmax_T(s_i) V_T + r_c, lse_i = lse_T(s_i) - log m_c.
          const std::vector<double> s = member_logits(x, bh, i, top, scale);
          const double mx = *std::max_element(s.begin(), s.end());
          double z = 0.0;
          for (double e : s) z += std::exp(e - mx);
          const double lse_t = mx + std::log(z);
          const std::uint64_t stream = drop.active() ? drop.row(b, h, 0, i) : 0;
          for (std::size_t t = 0; t < top.size(); ++t) {
            double w = row.mass * std::exp(s[t] - lse_t);
            if (drop.active()) w *= static_cast<double>(drop.factor(stream, top[t]));
            for (std::int64_t c = 0; c < dv; ++c) out[c] += w * x.v(bh, top[t])[c];
          }
          l = lse_t - std::log(row.mass);
        }
        if (lse != nullptr) lse[bh * pr.Nq + i] = l;
      }
    }
  });
}

void clustered_backward_f64(const Problem& pr, const ClusteredConfig& config, const DoubleTensors& in,
                            const double* o, const double* lse, const double* grad_o, double* grad_q,
                            double* grad_k, double* grad_v) {
  const Clusters cl = plan_clusters(pr, config);
  const DoubleView x{&pr, &in};
  const std::int64_t d = pr.d, dv = pr.dv;
  const double scale = static_cast<double>(pr.scale);
  std::fill_n(grad_q, pr.B * pr.H * pr.Nq * d, 0.0);
  std::fill_n(grad_k, pr.B * pr.H * pr.Nk * d, 0.0);
  std::fill_n(grad_v, pr.B * pr.H * pr.Nk * dv, 0.0);
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::vector<std::int32_t>& keys = cl.keys[static_cast<std::size_t>(b)];
    const std::size_t nk = keys.size();
    auto key = [&](std::size_t j) { return x.k(bh, keys[j]); };
    auto value = [&](std::size_t j) { return x.v(bh, keys[j]); };
    std::vector<double> dk(nk * static_cast<std::size_t>(d), 0.0), dvv(nk * static_cast<std::size_t>(dv), 0.0);
    std::vector<std::uint8_t> in_top;
    CentroidRow row;
    for (std::size_t u = cl.begin[static_cast<std::size_t>(bh)]; u < cl.begin[static_cast<std::size_t>(bh) + 1]; ++u) {
      const std::vector<std::int32_t>& members = cl.members[u];
      const std::vector<std::int32_t>& top = cl.top[u];
      const std::vector<double> qbar = mean_query(x, bh, members);
      mark_top(keys, top, in_top);
      centroid_row(qbar, scale, keys, in_top, drop, centroid_stream(drop, b, h, members), key, value, d, dv, row);
      std::vector<double> dr(static_cast<std::size_t>(dv), 0.0);
      double e_sum = 0.0;
      for (std::int32_t i : members) {
        const double* go = grad_o + (bh * pr.Nq + i) * dv;
        for (std::int64_t c = 0; c < dv; ++c) dr[static_cast<std::size_t>(c)] += go[c];
        if (top.empty()) continue;
        // The member part: weights w = exp(s - lse_i) on T_c (dropout factors F), E_i =
        // dO_i . (O_i - r_c), D_i = E_i / m_c, dS = w (F g - D_i).
        const double* out = o + (bh * pr.Nq + i) * dv;
        double e = 0.0;
        for (std::int64_t c = 0; c < dv; ++c) e += go[c] * (out[c] - row.r[static_cast<std::size_t>(c)]);
        e_sum += e;
        const std::vector<double> s = member_logits(x, bh, i, top, scale);
        std::vector<double> w(top.size()), gdot(top.size()), f(top.size(), 1.0);
        const std::uint64_t stream = drop.active() ? drop.row(b, h, 0, i) : 0;
        for (std::size_t t = 0; t < top.size(); ++t) {
          w[t] = std::exp(s[t] - lse[bh * pr.Nq + i]);
          if (drop.active()) f[t] = static_cast<double>(drop.factor(stream, top[t]));
          gdot[t] = 0.0;
          for (std::int64_t c = 0; c < dv; ++c) gdot[t] += go[c] * x.v(bh, top[t])[c];
          gdot[t] *= f[t];
        }
        const double Di = e / row.mass;
        double* gq = grad_q + (bh * pr.Nq + i) * d;
        for (std::size_t t = 0; t < top.size(); ++t) {
          const double ds = scale * w[t] * (gdot[t] - Di);
          double* gk = grad_k + (bh * pr.Nk + top[t]) * d;
          double* gv = grad_v + (bh * pr.Nk + top[t]) * dv;
          for (std::int64_t c = 0; c < dv; ++c) gv[c] += w[t] * f[t] * go[c];
          for (std::int64_t c = 0; c < d; ++c) {
            gq[c] += ds * x.k(bh, top[t])[c];
            gk[c] += ds * x.q(bh, i)[c];
          }
        }
      }
      const std::vector<double> dq = centroid_backward(row, qbar, scale, in_top, e_sum, dr, key, value, d, dv,
                                                       dk.data(), dvv.data());
      for (std::int32_t i : members)
        for (std::int64_t t = 0; t < d; ++t)
          grad_q[(bh * pr.Nq + i) * d + t] += dq[static_cast<std::size_t>(t)] / static_cast<double>(members.size());
    }
    for (std::size_t j = 0; j < nk; ++j) {
      for (std::int64_t t = 0; t < d; ++t) grad_k[(bh * pr.Nk + keys[j]) * d + t] += dk[j * static_cast<std::size_t>(d) + static_cast<std::size_t>(t)];
      for (std::int64_t c = 0; c < dv; ++c) grad_v[(bh * pr.Nk + keys[j]) * dv + c] += dvv[j * static_cast<std::size_t>(dv) + static_cast<std::size_t>(c)];
    }
  });
}

}  // namespace smyrf::detail
