// Feature-map ("linear") attention forward (definitions: linear.h).
//
// Every feature, state and sum is computed in double (inputs converted exactly), except the
// non-causal value products Phi_b^T V and phi_q^T S (float operands, float chains; see
// linear.h), in a fixed order that does not depend on the thread count:
//   non-causal: tasks per (b, h, block of kLinearKeyTask key positions): the block's
//     stabiliser, features and partial S_b, z_b (KeyBlock); the task that completes a
//     (b, h)'s last block combines them in block order (Combine); then tasks per (b, h,
//     block of kQueryBlock queries) read the state.
//   causal: task per (b, h): SLiM's chunked prefix form (running S, z; the chunk's key
//     features and the lower-triangular block per query).
//   gated rfa: task per (b, h): the recurrence in position order.
// Per target (Highway): the products (projections W x, block states Phi^T V, reads Phi_q S)
// are register tiles of the shared tile kernel (kernels/tile_matmul-inl.h; Gemm, VecMat,
// Absorb), each element a chain over the reduction index in order; state updates and single
// reads are vector loops over padded rows (multiples of 8 doubles, zero padding); exp
// (favor_plus, elu, efficient) and sin / cos (favor, rfa) are Highway's vector functions (a few
// ulp; sin / cos only while |w.x| <= 39000, their valid range, else std::sin / std::cos for the
// row).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/linear/linear.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/call_scratch.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "common/timer.h"
#include "common/workspace.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/tile_matmul-inl.h"
#include "methods/linear/features-inl.h"
#include "methods/linear/linear.h"
#include "methods/linear/registration.h"
#include "methods/linear/linear_internal.h"
#include "spec/draws.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace linear {

constexpr std::int64_t kQueryBlock = 64;

using detail::LinearMap;
using detail::Problem;


// The causal key stabiliser of (b, h) over its visible keys (favor_plus, favor; position
// order). x: scratch (d); xs, pj: blocks of G rows and their projections (favor_plus).
template <class T>
void KeyStats(const Problem& pr, const LinearMap& s, const double* wt, std::int64_t b,
              std::int64_t h, double* st, double* x, double* xs, double* pj, std::int64_t G) {
  const std::int64_t d = pr.d;
  if (s.map == FeatureMap::favor) {
    double c = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < pr.Nk; ++j) {
      if (!pr.key_visible(b, j)) continue;
      LoadRow(pr.k_row<T>(b, h, j), d, x);
      Prep(s, x, false);
      c = std::max(c, HalfSqNorm(x, d));
    }
    st[0] = c;
  } else if (s.map == FeatureMap::favor_plus) {
    // The same operations as the features (FeatureRows: prep, the projection chains,
    // minus |x|^2 / 2): every key's u_r - c is <= 0 exactly.
    double c = -std::numeric_limits<double>::infinity();
    std::int64_t n = 0;
    auto flush = [&] {
      ProjectRows(s, wt, xs, n, pj);
      for (std::int64_t k = 0; k < n; ++k)
        c = std::max(c, MaxOf(pj + k * s.dirs_p, s.m) - HalfSqNorm(xs + k * d, d));
      n = 0;
    };
    for (std::int64_t j = 0; j < pr.Nk; ++j) {
      if (!pr.key_visible(b, j)) continue;
      LoadRow(pr.k_row<T>(b, h, j), d, xs + n * d);
      Prep(s, xs + n * d, false);
      if (++n == G) flush();
    }
    flush();
    st[0] = c;
  }
}

// Writes O row i from acc (dv) / den (O = 0 when the query saw no key or den == 0) and lse NaN
// for a query that saw a key.
HWY_INLINE void Write(const Problem& pr, std::int64_t b, std::int64_t h, std::int64_t i,
                      const double* acc, double den, bool saw_key) {
  float* o = pr.o_row(b, h, i);
  if (!saw_key || den == 0.0) {
    std::fill_n(o, pr.dv, 0.0f);
  } else {
    for (std::int64_t c = 0; c < pr.dv; ++c) o[c] = static_cast<float>(acc[c] / den);
  }
  if (saw_key && pr.p->lse != nullptr)
    pr.p->lse[(b * pr.H + h) * pr.Nq + i] = std::numeric_limits<float>::quiet_NaN();
}

// acc = phi^T S (dvp), returns phi . z.
HWY_INLINE double Read(const double* phi, const double* S, const double* z, std::int64_t m,
                       std::int64_t dvp, double* acc) {
  VecMat(phi, S, m, dvp, dvp, acc);
  return Dot(phi, z, detail::linear_pad8(m));  // zero padding in both
}

// S += sum_j phi_j v_j^T, z += sum_j phi_j over n keys (features [n][mp], values [n][dvp]).
HWY_INLINE void Absorb(const double* kphi, std::int64_t mp, const double* kv, std::int64_t n,
                       std::int64_t m, std::int64_t dvp, double* S, double* z) {
  if (n == 0) return;
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  constexpr tile::Start kOnS = tile::Start::out;
  const tile::RowMajor<double> v{kv, dvp};
  for (std::int64_t r = 0; r < m; ++r) {
    for (std::int64_t j = 0; j < n; ++j) z[r] += kphi[j * mp + r];
    // S[r][c] = the chain from S[r][c] over the keys j < n in order of phi_j[r] v_j[c] (the same
    // chain as absorbing the keys one by one): tiles of 8, 2, then 1 vectors of row r.
    const tile::Strided<double> phi{kphi + r, 0, mp};
    double* Sr = S + r * dvp;
    std::int64_t c0 = 0;
    for (; c0 + 8 * L <= dvp; c0 += 8 * L) tile::Tile<1, 8, kOnS>(dd, phi, v, n, c0, Sr, 0);
    for (; c0 + 2 * L <= dvp; c0 += 2 * L) tile::Tile<1, 2, kOnS>(dd, phi, v, n, c0, Sr, 0);
    for (; c0 < dvp; c0 += L) tile::Tile<1, 1, kOnS>(dd, phi, v, n, c0, Sr, 0);
  }
}

struct BH {
  std::int64_t b, h;
  const double* wt;
  double* st;
  double* S;
  double* z;
};
// The (b, h) of task bh; its state S, z in slot `slot` of a.state (bh for the non-causal
// state that outlives its task, the thread's own slot for the causal and gated forms).
HWY_INLINE BH At(const detail::LinearRunArgs& a, std::int64_t bh, std::int64_t slot) {
  const std::int64_t H = a.pr->H, m = a.s.m;
  const std::int64_t h = bh % H;
  double* S = a.state + slot * (m * a.dvp + a.s.mp);
  return {bh / H,
          h,
          a.s.wt != nullptr ? a.s.wt + h * a.s.d * a.s.dirs_p : nullptr,
          a.stats + bh * a.s.kstat,
          S,
          S + m * a.dvp};
}

// One key block task (non-causal): the visible keys of (b, h) at positions [j0, j1), in
// position order, gathered, prepared and projected as one block; the block's stabiliser(s)
// from those projections (favor_plus: max over its keys and r < m of u_r, the same values the
// features use, so every argument of exp is <= 0 exactly; favor: max |x|^2 / 2; efficient:
// the max of each feature t); the features with those; then the block's partial state
// S_b = Phi^T V (each element the chain over the block's keys in order) and z_b = sum of the
// feature rows. part: a LinearPart record.
template <class T>
void KeyBlock(const detail::LinearRunArgs& a, std::int64_t bh, std::int64_t j0,
              std::int64_t j1, double* sc, double* part) {
  const Problem& pr = *a.pr;
  const LinearMap& s = a.s;
  const BH at = At(a, bh, bh);
  const std::int64_t d = s.d, m = s.m, mp = s.mp, dvp = a.dvp;
  const detail::LinearPart pt = detail::LinearPart::make(m, mp, dvp, d);
  double* xs = sc + a.layout.xs;
  double* pj = sc + a.layout.pj;
  double* kphi = sc + a.layout.kphi;
  float* kvf = reinterpret_cast<float*>(sc + a.layout.fb);  // values, exact in float
  double* cb = part + pt.cb;
  std::int64_t n = 0;
  if (a.any[at.b]) {
    for (std::int64_t j = j0; j < j1; ++j) {
      if (!pr.key_visible(at.b, j)) continue;
      LoadRow(pr.k_row<T>(at.b, at.h, j), d, xs + n * d);
      const T* vrow = pr.v_row<T>(at.b, at.h, j);
      float* v = kvf + n * dvp;
      for (std::int64_t t = 0; t < pr.dv; ++t) v[t] = detail::to_float(vrow[t]);
      std::fill(v + pr.dv, v + dvp, 0.0f);
      ++n;
    }
  }
  part[pt.count] = static_cast<double>(n);
  if (n == 0) return;
  KeyBlockFeatures(s, at.wt, xs, n, pj, cb, kphi, sc + a.layout.tmp);
  if (s.map == FeatureMap::dpfp) {
    // DPFP's features are products of two coordinates: with small inputs they fall below
    // float's range before the float products. The block's features are divided by their
    // max (cb = its log, -inf for an all-zero block) and the blocks recombined like the
    // FAVOR stabilisers; the scale cancels in the ratio.
    double mx = 0.0;
    for (std::int64_t i = 0; i < n * mp; ++i) mx = std::max(mx, kphi[i]);
    cb[0] = mx > 0.0 ? std::log(mx) : -std::numeric_limits<double>::infinity();
    if (mx > 0.0)
      for (std::int64_t i = 0; i < n * mp; ++i) kphi[i] /= mx;
  }
  // S_b[r][c] = sum_k kphi[k][r] v_k[c] in float: the features rounded to float, X(r, k) =
  // kf[k mp + r], each element a float chain over the block's keys in order.
  float* kf = reinterpret_cast<float*>(sc + a.layout.fa);
  for (std::int64_t i = 0; i < n * mp; ++i) kf[i] = static_cast<float>(kphi[i]);
  float* sf = reinterpret_cast<float*>(sc + a.layout.fs);
  GemmF(kf, 1, mp, m, kvf, dvp, n, dvp, sf, dvp);
  double* Sb = part + pt.S;
  for (std::int64_t i = 0; i < m * dvp; ++i) Sb[i] = static_cast<double>(sf[i]);
  double* z = part + pt.z;
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  for (std::int64_t r = 0; r < mp; r += L) {
    auto acc = hn::Zero(dd);
    for (std::int64_t k = 0; k < n; ++k) acc = hn::Add(acc, hn::LoadU(dd, kphi + k * mp + r));
    hn::StoreU(acc, dd, z + r);
  }
}

// Rows [r0, r1) of the state of (b, h) from its nb key block records (block order): with w_b
// = exp(c_b - c), c the max of the blocks' stabilisers (favor_plus, favor: one per block;
// efficient: per feature r; w_b = 1 for the other maps), S[r] = sum_b w_b S_b[r] and z[r] =
// sum_b w_b z_b[r], each a chain over the non-empty blocks in order; efficient then divides
// row r by its softmax sum, which is z[r] (so z[r] = 1 up to rounding).
HWY_INLINE void Combine(const detail::LinearRunArgs& a, std::int64_t bh, const double* parts,
                        std::int64_t nb, std::int64_t r0, std::int64_t r1) {
  const LinearMap& s = a.s;
  const BH at = At(a, bh, bh);
  const std::int64_t dvp = a.dvp;
  const detail::LinearPart pt = detail::LinearPart::make(s.m, s.mp, dvp, s.d);
  const bool one_c = s.map == FeatureMap::favor_plus || s.map == FeatureMap::favor || s.map == FeatureMap::dpfp;
  const bool per_r = s.map == FeatureMap::efficient;
  double c = -std::numeric_limits<double>::infinity();
  if (one_c)
    for (std::int64_t blk = 0; blk < nb; ++blk) {
      const double* p = parts + blk * pt.total;
      if (p[pt.count] > 0) c = std::max(c, p[pt.cb]);
    }
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  for (std::int64_t r = r0; r < r1; ++r) {
    double cr = c;
    if (per_r)
      for (std::int64_t blk = 0; blk < nb; ++blk) {
        const double* p = parts + blk * pt.total;
        if (p[pt.count] > 0) cr = std::max(cr, p[pt.cb + r]);
      }
    double* Sr = at.S + r * dvp;
    std::fill_n(Sr, dvp, 0.0);
    double zr = 0.0;
    for (std::int64_t blk = 0; blk < nb; ++blk) {
      const double* p = parts + blk * pt.total;
      if (!(p[pt.count] > 0)) continue;
      // With one_c, cr = -inf only for DPFP with every block all-zero: then S = z = 0.
      double w = 1.0;
      if (one_c) w = cr == -std::numeric_limits<double>::infinity() ? 0.0 : std::exp(p[pt.cb] - cr);
      if (per_r) w = std::exp(p[pt.cb + r] - cr);
      const auto vw = hn::Set(dd, w);
      const double* Sb = p + pt.S + r * dvp;
      for (std::int64_t col = 0; col < dvp; col += L)
        hn::StoreU(hn::MulAdd(vw, hn::LoadU(dd, Sb + col), hn::LoadU(dd, Sr + col)), dd, Sr + col);
      zr += w * p[pt.z + r];
    }
    if (per_r && zr > 0.0) {
      for (std::int64_t col = 0; col < dvp; ++col) Sr[col] /= zr;
      zr /= zr;
    }
    at.z[r] = zr;
    float* Sf = a.statef + bh * s.m * dvp + r * dvp;
    for (std::int64_t col = 0; col < dvp; ++col) Sf[col] = static_cast<float>(Sr[col]);
  }
  if (r1 == s.m) std::fill(at.z + s.m, at.z + s.mp, 0.0);
}

template <class T>
void ReadQueries(const detail::LinearRunArgs& a, std::int64_t bh, std::int64_t i0,
                 std::int64_t i1, double* sc, std::int32_t* kpos) {
  const Problem& pr = *a.pr;
  const LinearMap& s = a.s;
  const BH at = At(a, bh, bh);
  const bool any_key = a.any[at.b] != 0;
  double* xs = sc + a.layout.xs;
  double* pj = sc + a.layout.pj;
  double* phi = sc + a.layout.kphi;  // the group's query features
  double* acc = sc + a.layout.acc;
  std::int32_t* idx = kpos;  // the group's queries
  std::int64_t n = 0;
  auto flush = [&] {
    FeatureRows(s, at.wt, xs, n, true, at.st, pj, phi, sc + a.layout.tmp);
    if (s.map == FeatureMap::dpfp)  // each query's features over their max (see KeyBlock)
      for (std::int64_t k = 0; k < n; ++k) {
        double* row = phi + k * s.mp;
        const double mx = *std::max_element(row, row + s.m);
        if (mx > 0.0)
          for (std::int64_t r = 0; r < s.m; ++r) row[r] /= mx;
      }
    // Numerators in float: phi_k rounded to float times S rounded to float (each element a
    // float chain over r < m in order); the normaliser phi_k . z in double.
    float* phif = reinterpret_cast<float*>(sc + a.layout.fa);
    float* accf = reinterpret_cast<float*>(sc + a.layout.fb);
    for (std::int64_t i = 0; i < n * s.mp; ++i) phif[i] = static_cast<float>(phi[i]);
    GemmF(phif, s.mp, 1, n, a.statef + bh * s.m * a.dvp, a.dvp, s.m, a.dvp, accf, a.dvp);
    for (std::int64_t k = 0; k < n; ++k) {
      const double den = Dot(phi + k * s.mp, at.z, s.mp);
      for (std::int64_t c = 0; c < pr.dv; ++c) acc[c] = static_cast<double>(accf[k * a.dvp + c]);
      Write(pr, at.b, at.h, idx[k], acc, den, true);
    }
    n = 0;
  };
  for (std::int64_t i = i0; i < i1; ++i) {
    if (!pr.query_active(at.b, i) || !any_key) {
      std::fill_n(pr.o_row(at.b, at.h, i), pr.dv, 0.0f);
      continue;
    }
    LoadRow(pr.q_row<T>(at.b, at.h, i), pr.d, xs + n * pr.d);
    idx[n] = static_cast<std::int32_t>(i);
    if (++n == a.kb) flush();
  }
  flush();
}

// SLiM's chunked prefix form for one (b, h).
template <class T>
void Causal(const detail::LinearRunArgs& a, std::int64_t bh, int tid) {
  const Problem& pr = *a.pr;
  const LinearMap& s = a.s;
  const BH at = At(a, bh, tid);
  double* sc = a.scratch + tid * a.layout.total;
  std::int32_t* kpos = a.kpos + tid * 3 * a.kb;  // the chunk's key positions, then
  std::int32_t* qidx = kpos + a.kb;              // its queries and their key counts
  std::int32_t* qupto = qidx + a.kb;
  const std::int64_t b = at.b, h = at.h, m = s.m, mp = s.mp, dv = pr.dv, dvp = a.dvp;
  double* xs = sc + a.layout.xs;
  double* pj = sc + a.layout.pj;
  KeyStats<T>(pr, s, at.wt, b, h, at.st, sc + a.layout.x, xs, pj, a.E);
  std::fill_n(at.S, m * dvp + mp, 0.0);
  double* phi = sc + a.layout.phi;
  double* acc = sc + a.layout.acc;
  double* kphi = sc + a.layout.kphi;
  double* kv = sc + a.layout.kv;
  std::fill_n(kv, a.E * dvp, 0.0);           // zero padding of the value rows
  const std::int64_t shift = pr.Nk - pr.Nq;  // p = i + shift
  // Queries before the first key position see nothing.
  for (std::int64_t i = 0; i < std::min(pr.Nq, -shift); ++i)
    std::fill_n(pr.o_row(b, h, i), dv, 0.0f);
  std::int64_t seen = 0;  // visible keys before the chunk
  for (std::int64_t s0 = 0; s0 < pr.Nk; s0 += a.E) {
    const std::int64_t s1 = std::min(pr.Nk, s0 + a.E);
    std::int64_t n = 0;
    for (std::int64_t j = s0; j < s1; ++j) {
      if (!pr.key_visible(b, j)) continue;
      LoadRow(pr.k_row<T>(b, h, j), pr.d, xs + n * pr.d);
      LoadRow(pr.v_row<T>(b, h, j), dv, kv + n * dvp);
      kpos[n++] = static_cast<std::int32_t>(j);
    }
    FeatureRows(s, at.wt, xs, n, false, at.st, pj, kphi, sc + a.layout.tmp);
    const std::int64_t i0 = std::max<std::int64_t>(0, s0 - shift);
    const std::int64_t i1 = std::min<std::int64_t>(pr.Nq, s1 - shift);
    // The chunk's queries that see a key: rows gathered (xs is free again), features as a block.
    std::int64_t nq = 0, upto = 0;  // upto: chunk keys at positions <= p (p grows with i)
    for (std::int64_t i = i0; i < i1; ++i) {
      const std::int64_t p = i + shift;
      while (upto < n && kpos[upto] <= p) ++upto;
      if (!pr.query_active(b, i) || seen + upto == 0) {
        std::fill_n(pr.o_row(b, h, i), dv, 0.0f);
        continue;
      }
      LoadRow(pr.q_row<T>(b, h, i), pr.d, xs + nq * pr.d);
      qidx[nq] = static_cast<std::int32_t>(i);
      qupto[nq++] = static_cast<std::int32_t>(upto);
    }
    FeatureRows(s, at.wt, xs, nq, true, at.st, pj, phi, sc + a.layout.tmp);
    for (std::int64_t k = 0; k < nq; ++k) {
      const double* phik = phi + k * mp;
      double den = Read(phik, at.S, at.z, m, dvp, acc);
      for (std::int64_t jj = 0; jj < qupto[k]; ++jj) {
        const double aij = Dot(phik, kphi + jj * mp, mp);
        den += aij;
        Axpy(aij, kv + jj * dvp, acc, dvp);
      }
      Write(pr, b, h, qidx[k], acc, den, true);
    }
    Absorb(kphi, mp, kv, n, m, dvp, at.S, at.z);
    seen += n;
  }
}

// Gated RFA recurrence for one (b, h).
template <class T>
void Gated(const detail::LinearRunArgs& a, std::int64_t bh, int tid) {
  const Problem& pr = *a.pr;
  const LinearMap& s = a.s;
  const BH at = At(a, bh, tid);
  double* sc = a.scratch + tid * a.layout.total;
  const std::int64_t b = at.b, h = at.h, m = s.m, dv = pr.dv, dvp = a.dvp;
  std::fill_n(at.S, m * dvp + s.mp, 0.0);
  double* phi = sc + a.layout.phi;
  double* acc = sc + a.layout.acc;
  double* v = sc + a.layout.vrow;
  std::fill_n(v, dvp, 0.0);
  const float* g = a.gates + bh * pr.Nk;
  const std::int64_t shift = pr.Nk - pr.Nq;
  for (std::int64_t i = 0; i < std::min(pr.Nq, -shift); ++i)
    std::fill_n(pr.o_row(b, h, i), dv, 0.0f);
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  bool seen = false;
  for (std::int64_t j = 0; j < pr.Nk; ++j) {
    if (pr.key_visible(b, j)) {
      LoadRow(pr.k_row<T>(b, h, j), pr.d, sc + a.layout.x);
      Features(s, at.wt, sc + a.layout.x, false, nullptr, phi, sc + a.layout.tmp);
      LoadRow(pr.v_row<T>(b, h, j), dv, v);
      const double gt = g[j], keep = 1.0 - gt;
      const auto vg = hn::Set(dd, gt);
      for (std::int64_t r = 0; r < m; ++r) {
        const double f = keep * phi[r];
        at.z[r] = gt * at.z[r] + f;
        double* sr = at.S + r * dvp;
        const auto vf = hn::Set(dd, f);
        for (std::int64_t c = 0; c < dvp; c += L)
          hn::StoreU(hn::MulAdd(vg, hn::LoadU(dd, sr + c), hn::Mul(vf, hn::LoadU(dd, v + c))), dd,
                     sr + c);
      }
      seen = true;
    }
    const std::int64_t i = j - shift;
    if (i < 0 || i >= pr.Nq) continue;
    if (!pr.query_active(b, i) || !seen) {
      std::fill_n(pr.o_row(b, h, i), dv, 0.0f);
      continue;
    }
    LoadRow(pr.q_row<T>(b, h, i), pr.d, sc + a.layout.x);
    Features(s, at.wt, sc + a.layout.x, true, nullptr, phi, sc + a.layout.tmp);
    const double den = Read(phi, at.S, at.z, m, dvp, acc);
    Write(pr, b, h, i, acc, den, true);
  }
}

template <class T>
void RunT(const detail::LinearRunArgs& a) {
  const Problem& pr = *a.pr;
  const std::int64_t BH = pr.B * pr.H;
  const std::int64_t per = a.layout.total;
  if (a.gates != nullptr) {
    detail::parallel_for_tid(BH, pr.threads,
                             [&](std::int64_t bh, int tid) { Gated<T>(a, bh, tid); });
    return;
  }
  if (pr.p->causal) {
    detail::parallel_for_tid(BH, pr.threads,
                             [&](std::int64_t bh, int tid) { Causal<T>(a, bh, tid); });
    return;
  }
  // Groups of a.group (b, h): key block tasks; the task that completes the last block of a
  // (b, h) combines its records (Combine, rows in order). Each record and state depends
  // on its (b, h) and block only: neither the grouping (sized from the thread count) nor which
  // thread combines changes any bit.
  const std::int64_t KT = detail::kLinearKeyTask;
  const std::int64_t nb = (pr.Nk + KT - 1) / KT;
  const std::int64_t psz = detail::LinearPart::make(a.s.m, a.s.mp, a.dvp, a.s.d).total;
  std::vector<std::atomic<std::int64_t>> done(static_cast<std::size_t>(a.group));
  for (std::int64_t g0 = 0; g0 < BH; g0 += a.group) {
    const std::int64_t gn = std::min(a.group, BH - g0);
    for (std::int64_t g = 0; g < gn; ++g) done[static_cast<std::size_t>(g)].store(0);
    detail::parallel_for_tid(gn * nb, pr.threads, [&](std::int64_t task, int tid) {
      const std::int64_t g = task / nb, bh = g0 + g, blk = task % nb;
      KeyBlock<T>(a, bh, blk * KT, std::min(pr.Nk, (blk + 1) * KT), a.scratch + tid * per,
                  a.parts + task * psz);
      if (done[static_cast<std::size_t>(g)].fetch_add(1, std::memory_order_acq_rel) == nb - 1 &&
          a.any[bh / pr.H])
        Combine(a, bh, a.parts + g * nb * psz, nb, 0, a.s.m);
    });
  }
  const std::int64_t blocks = (pr.Nq + kQueryBlock - 1) / kQueryBlock;
  detail::parallel_for_tid(BH * blocks, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / blocks, blk = task % blocks;
    const std::int64_t i0 = blk * kQueryBlock;
    const std::int64_t i1 = std::min(pr.Nq, i0 + kQueryBlock);
    ReadQueries<T>(a, bh, i0, i1, a.scratch + tid * per, a.kpos + tid * 3 * a.kb);
  });
}

}  // namespace linear

void LinearRun(const detail::LinearRunArgs& args) {
  detail::with_input_type(args.pr->dtype, [&](auto tag) { linear::RunT<decltype(tag)>(args); });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smyrf::detail {
HWY_EXPORT(LinearRun);

namespace {

constexpr std::int64_t kMaxFeatures = 1 << 16;
constexpr std::int64_t kLinearKeyBlock = 16;


// Rows of W: m for favor_plus, m / 2 directions for favor and rfa, none otherwise.
std::int64_t direction_count(const LinearConfig& c) {
  if (c.map == FeatureMap::favor_plus) return c.n_features;
  if (c.map == FeatureMap::favor || c.map == FeatureMap::rfa) return c.n_features / 2;
  return 0;
}

}  // namespace

std::int64_t linear_feature_count(const LinearConfig& config, std::int64_t d) {
  switch (config.map) {
    case FeatureMap::elu:
    case FeatureMap::efficient: return d;
    case FeatureMap::favor_plus:
    case FeatureMap::favor:
    case FeatureMap::rfa: return config.n_features;
    case FeatureMap::dpfp: return 2 * d * config.dpfp_nu;
    case FeatureMap::l2: return d + 1;
  }
  return d;
}

void Method<LinearConfig>::check(const LinearConfig& config, const Problem& pr) {
  constexpr ConfigFail fail{"LinearConfig"};
  const int map = static_cast<int>(config.map);
  if (map < 0 || map > static_cast<int>(FeatureMap::l2))
    fail("map", std::to_string(map), "not a FeatureMap");
  if (config.n_features < 1) fail("n_features", std::to_string(config.n_features), "must be >= 1");
  if (config.n_features > kMaxFeatures)
    fail("n_features", std::to_string(config.n_features), "must be <= 65536");
  if ((config.map == FeatureMap::favor || config.map == FeatureMap::rfa) && config.n_features % 2)
    fail("n_features", std::to_string(config.n_features),
         std::string("must be even for FeatureMap::") + feature_map_name(config.map) +
             " (sin and cos of n_features / 2 directions)");
  if (!std::isfinite(config.rfa_sigma) || !(config.rfa_sigma > 0.0f))
    fail("rfa_sigma", std::to_string(config.rfa_sigma), "must be finite and > 0");
  if (config.dpfp_nu < 1 || config.dpfp_nu > 2 * pr.d)
    fail("dpfp_nu", std::to_string(config.dpfp_nu),
         "must be in [1, 2 d] = [1, " + std::to_string(2 * pr.d) + "]");
  if (config.chunk < 1) fail("chunk", std::to_string(config.chunk), "must be >= 1");
  if (config.gates != nullptr) {
    if (config.map != FeatureMap::rfa)
      fail("gates", "non-null",
           std::string("gating is defined for FeatureMap::rfa only (map = ") +
               feature_map_name(config.map) + ")");
    if (!pr.p->causal) fail("gates", "non-null", "gating requires params.causal = true");
    for (std::int64_t b = 0; b < pr.B; ++b)
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          if (!pr.key_visible(b, j)) continue;
          const float g = config.gates[(b * pr.H + h) * pr.Nk + j];
          if (!(g >= 0.0f && g <= 1.0f))  // also false for NaN
            throw Error("smyrf: LinearConfig.gates[" + std::to_string(b) + ", " +
                        std::to_string(h) + ", " + std::to_string(j) + "] = " + std::to_string(g) +
                        ": must be finite and in [0, 1] ([B, H, Nk] floats, contiguous)");
        }
  }
  // The gates' gradient and double values: only of given gates.
  const LinearDoubleParts none;
  const LinearDoubleParts& f64 = config.f64 != nullptr ? *config.f64 : none;
  const std::pair<const char*, const void*> need_gates[] = {
      {"grad_gates", config.grad_gates}, {"f64->gates", f64.gates}, {"f64->grad_gates", f64.grad_gates}};
  for (const auto& [field, ptr] : need_gates)
    if (ptr != nullptr && config.gates == nullptr)
      fail(field, ptr_str(ptr), "LinearConfig.gates = nullptr (no gates to differentiate): must be nullptr");
}

RunInfo linear_forward(const Problem& pr, const LinearConfig& config, Workspace* workspace) {
  Timer total;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t m = linear_feature_count(config, d), mp = linear_pad8(m);
  const std::int64_t dirs = direction_count(config), dirs_p = linear_pad8(dirs);
  const std::int64_t dvp = linear_pad16(dv);
  const bool gated = config.gates != nullptr;
  const std::int64_t E = pr.p->causal && !gated ? std::min<std::int64_t>(config.chunk, pr.Nk) : 0;
  // Key rows gathered per block: the causal chunk, 16 keys for the gated recurrence, else a
  // key task (kLinearKeyTask keys; also the query groups).
  const std::int64_t kb = E > 0   ? E
                          : gated ? std::min<std::int64_t>(kLinearKeyBlock, pr.Nk)
                                  : std::min<std::int64_t>(kLinearKeyTask, pr.Nk);
  const LinearScratch layout = LinearScratch::make(d, mp, dirs_p, dvp, kb);
  const std::int64_t kstat = 1;  // the causal key stabiliser (favor_plus, favor)
  const std::size_t threads = static_cast<std::size_t>(pr.threads);

  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const std::size_t wt_slot = arena.add<double>(static_cast<std::size_t>(pr.H * d * dirs_p));
  // States: one per (b, h) for the non-causal reads, one per thread for the causal forms.
  const std::int64_t states = pr.p->causal ? static_cast<std::int64_t>(threads) : BH;
  const std::size_t state_slot =
      arena.add<double>(static_cast<std::size_t>(states * (m * dvp + mp)));
  const std::size_t stats_slot = arena.add<double>(static_cast<std::size_t>(BH * kstat));
  const std::size_t scratch_slot =
      arena.add<double>(threads * static_cast<std::size_t>(layout.total));
  const std::size_t kpos_slot = arena.add<std::int32_t>(threads * 3 * static_cast<std::size_t>(kb));
  const std::size_t any_slot = arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B));
  // Non-causal key block records: enough (b, h) per group for 4 tasks per thread.
  const std::int64_t nb = std::max<std::int64_t>(1, (pr.Nk + kLinearKeyTask - 1) / kLinearKeyTask);
  const std::int64_t group =
      std::clamp<std::int64_t>((4 * pr.threads + nb - 1) / nb, 1, std::max<std::int64_t>(BH, 1));
  const bool plain = !pr.p->causal;
  const std::size_t parts_slot = arena.add<double>(
      plain ? static_cast<std::size_t>(group * nb * LinearPart::make(m, mp, dvp, d).total) : 0);
  const std::size_t statef_slot =
      arena.add<float>(plain ? static_cast<std::size_t>(BH * m * dvp) : 0);
  scratch.bind();

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  double* wt = arena.at<double>(wt_slot);
  if (dirs > 0) {
    // W^T per head, rows zero-padded to dirs_p (rfa: divided by rfa_sigma), from the shared
    // draw (spec/draws.h).
    const bool rfa = config.map == FeatureMap::rfa;
    const double sigma = static_cast<double>(config.rfa_sigma);
    parallel_for(pr.H, pr.threads, [&](std::int64_t h) {
      const std::vector<double> w =
          spec::linear_random_features(pr.p->seed, h, dirs, d, config.orthogonal);
      double* out = wt + h * d * dirs_p;
      std::fill_n(out, d * dirs_p, 0.0);
      for (std::int64_t r = 0; r < dirs; ++r)
        for (std::int64_t t = 0; t < d; ++t) {
          const double x = w[static_cast<std::size_t>(r * d + t)];
          out[t * dirs_p + r] = rfa ? x / sigma : x;
        }
    });
  }
  std::uint8_t* any = arena.at<std::uint8_t>(any_slot);
  std::size_t scores = 0;
  for (std::int64_t b = 0; b < pr.B; ++b) {
    std::int64_t nq = 0, nk = 0;
    for (std::int64_t i = 0; i < pr.Nq; ++i) nq += pr.query_active(b, i) ? 1 : 0;
    for (std::int64_t j = 0; j < pr.Nk; ++j) nk += pr.key_visible(b, j) ? 1 : 0;
    any[b] = nk > 0 ? 1 : 0;
    // Feature entries: (active queries + visible keys) * m per (b, h).
    scores += static_cast<std::size_t>(pr.H * (nq + nk) * m);
  }
  info.transform.seconds = total.seconds();

  LinearMap s;
  s.map = config.map;
  s.d = d;
  s.m = m;
  s.dirs = dirs;
  s.mp = mp;
  s.dirs_p = dirs_p;
  s.sq = std::sqrt(std::abs(static_cast<double>(pr.scale)));
  s.qsign = pr.scale < 0.0f ? -1.0 : 1.0;
  s.nu = config.dpfp_nu;
  s.wt = dirs > 0 ? wt : nullptr;
  s.kstat = kstat;
  const LinearRunArgs args{&pr,
                           s,
                           layout,
                           dvp,
                           arena.at<double>(scratch_slot),
                           arena.at<std::int32_t>(kpos_slot),
                           E,
                           arena.at<double>(state_slot),
                           arena.at<double>(stats_slot),
                           config.gates,
                           any,
                           kb,
                           arena.at<double>(parts_slot),
                           group,
                           arena.at<float>(statef_slot)};
  Timer attn;
  HWY_DYNAMIC_DISPATCH(LinearRun)(args);
  info.attention.seconds = attn.seconds();
  info.attention_scores = scores;
  // Bytes model (common/phases.h): Q, K (twice with a key pre-pass) and V read once, O written.
  const double e = static_cast<double>(pr.elem_bytes());
  const double key_reads =
      pr.p->causal && (config.map == FeatureMap::favor_plus || config.map == FeatureMap::favor)
          ? 2.0
          : 1.0;
  info.attention.bytes =
      static_cast<double>(BH) *
      (static_cast<double>(pr.Nq) * (static_cast<double>(d) * e + static_cast<double>(dv) * 4.0) +
       static_cast<double>(pr.Nk) * (key_reads * static_cast<double>(d) + static_cast<double>(dv)) *
           e);
  info.seconds_total = total.seconds();
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
