// Internals of linear.cpp shared by its per-target code (HWY_NAMESPACE) and its driver.
#pragma once

#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Vectors are padded to multiples of 8 doubles (the widest vector), zeros in the padding.
inline std::int64_t linear_pad8(std::int64_t n) { return (n + 7) / 8 * 8; }
// Value rows (dvp) are padded to multiples of 16 (the widest float vector).
inline std::int64_t linear_pad16(std::int64_t n) { return (n + 15) / 16 * 16; }

// What every task needs to compute a row's features.
struct LinearMap {
  FeatureMap map;
  std::int64_t d, m, dirs;  // head dimension, features, random directions (rows of W)
  std::int64_t mp, dirs_p;  // padded m and dirs
  double sq;                // sqrt(|scale|) (favor_plus, favor)
  double qsign;             // sign of the scale applied to queries (+1 or -1)
  int nu;                   // dpfp
  const double* wt;         // [H][d][dirs_p]: W^T per head (rfa: divided by rfa_sigma), or null
  std::int64_t kstat;       // doubles of per-(b, h) key statistics
};

// Per-thread scratch (doubles, each region a multiple of 8): x (d), tmp (3 dirs_p or 2d),
// query features [E][mp], acc (dvp), v row (dvp), then a block of E rows: inputs [E][d],
// projections [E][dirs_p], key features [E][mp], values [E][dvp] (E: the causal chunk, 16 for
// gated rfa, or kLinearKeyTask), then the float regions of the non-causal value products.
struct LinearScratch {
  std::int64_t x, tmp, phi, acc, vrow, xs, pj, kphi, kv, fa, fb, fs, total;
  static LinearScratch make(std::int64_t d, std::int64_t mp, std::int64_t dirs_p, std::int64_t dvp,
                            std::int64_t E) {
    LinearScratch s{};
    std::int64_t at = 0;
    auto take = [&](std::int64_t n) {
      const std::int64_t o = at;
      at += linear_pad8(n);
      return o;
    };
    s.x = take(d);
    s.tmp = take(3 * dirs_p > 2 * d ? 3 * dirs_p : 2 * d);
    s.phi = take(E * mp);
    s.acc = take(dvp);
    s.vrow = take(dvp);
    s.xs = take(E * d);
    s.pj = take(E * dirs_p);
    s.kphi = take(E * mp);
    s.kv = take(E * dvp);
    // Float copies for the value products (sized in doubles): features [E][mp], values or
    // numerators [E][dvp], a block state [mp][dvp].
    s.fa = take(E * mp);
    s.fb = take(E * dvp);
    s.fs = take(mp * dvp);
    s.total = at;
    return s;
  }
};

// Non-causal keys: tasks of kLinearKeyTask consecutive key positions per (b, h) (a constant,
// so the blocks and the chains within them do not depend on the thread count).
constexpr std::int64_t kLinearKeyTask = 128;

// A key block's record (doubles, regions multiples of 8): its partial state S_b [m][dvp], z_b
// [mp], its stabiliser(s) (favor_plus, favor: 1; efficient: d), the number of its visible keys.
struct LinearPart {
  std::int64_t S, z, cb, count, total;
  static LinearPart make(std::int64_t m, std::int64_t mp, std::int64_t dvp, std::int64_t d) {
    LinearPart p{};
    p.S = 0;
    p.z = m * dvp;
    p.cb = p.z + mp;
    p.count = p.cb + linear_pad8(d);
    p.total = p.count + 8;
    return p;
  }
};

struct LinearRunArgs {
  const Problem* pr;
  LinearMap s;
  LinearScratch layout;
  std::int64_t dvp;         // padded dv (row stride of S and of the chunk's values)
  double* scratch;          // threads * layout.total
  std::int32_t* kpos;       // threads * kb: positions of the block's keys or queries
  std::int64_t E;           // causal chunk (min(chunk, Nk)); 0 otherwise
  double* state;            // [BH or threads][m * dvp + mp]: S then z
  double* stats;            // [BH][kstat]
  const float* gates;       // gated rfa or nullptr
  const std::uint8_t* any;  // [B]: the batch element has a visible key
  std::int64_t kb;          // key rows per gathered block (the chunk E when causal)
  double* parts;            // non-causal: group * ceil(Nk / kLinearKeyTask) LinearPart records
  std::int64_t group;       // non-causal: (b, h) whose key blocks run together
  float* statef;            // non-causal: [BH][m * dvp]: S rounded to float (the reads)
};

}  // namespace smyrf::detail
