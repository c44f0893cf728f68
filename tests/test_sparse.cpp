// Sparse attention (SparseConfig, the fixed patterns) against its double-precision oracle
// (reference/reference.h: a plain predicate per (query, key) from the definition in
// smyrf.h, softmax in double), dense attention, and its own invariants.
//
// Tolerance: the suite's rule (test_util.h), Problem::tolerance(n) with n the largest key set of
// any query (from the oracle). The lse output is compared with the same rule divided by max|V|,
// i.e. 16 eps (1 + L + log2(n + 1)): the logsumexp moves by at most max_j |delta logit_j| plus
// the roundings of the sum, with no factor |V|. The key sets themselves are integers and must
// match the oracle exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "api/inspect.h"
#include "methods/sparse/sparse.h"
#include "reference/reference.h"
#include "spec/draws.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

SparseConfig pattern(SparsePattern kind) {
  SparseConfig c;
  c.pattern = kind;
  return c;
}

SparseConfig local(int window) {
  SparseConfig c = pattern(SparsePattern::local);
  c.window = window;
  return c;
}
SparseConfig dilated(int window, int dilation) {
  SparseConfig c = pattern(SparsePattern::dilated);
  c.window = window;
  c.dilation = dilation;
  return c;
}
SparseConfig strided(int window, int stride) {
  SparseConfig c = pattern(SparsePattern::strided);
  c.window = window;
  c.stride = stride;
  return c;
}
SparseConfig fixed(int stride, int summary) {
  SparseConfig c = pattern(SparsePattern::fixed);
  c.stride = stride;
  c.summary = summary;
  return c;
}
SparseConfig longformer(int window, int global_tokens) {
  SparseConfig c = pattern(SparsePattern::longformer);
  c.window = window;
  c.global_tokens = global_tokens;
  return c;
}
SparseConfig bigbird(int block_size, int global_blocks, int random_blocks) {
  SparseConfig c = pattern(SparsePattern::bigbird);
  c.block_size = block_size;
  c.global_blocks = global_blocks;
  c.random_blocks = random_blocks;
  return c;
}
SparseConfig axial(SparsePattern kind, int width) {
  SparseConfig c = pattern(kind);
  c.width = width;
  return c;
}

struct PatternCase {
  std::string name;
  SparseConfig config;
};

// Every pattern twice: units smaller than a query tile (many groups per unit of work, windows
// merged), and units larger than a query tile (groups cut at 48 inside one class).
std::vector<PatternCase> pattern_cases() {
  return {
      {"local_w5", local(5)},
      {"local_w70", local(70)},
      {"dilated_w3_d3", dilated(3, 3)},
      {"dilated_w20_d2", dilated(20, 2)},
      {"strided_w2_s7", strided(2, 7)},
      {"strided_w30_s60", strided(30, 60)},
      {"strided_w6_s3", strided(6, 3)},  // window edges on the stride: both parts meet there
      {"fixed_s10_c3", fixed(10, 3)},
      {"fixed_s64_c5", fixed(64, 5)},
      {"longformer_w4_g3", longformer(4, 3)},
      {"longformer_w50_g60", longformer(50, 60)},
      {"bigbird_b8_g1_r2", bigbird(8, 1, 2)},
      {"bigbird_b64_g1_r1", bigbird(64, 1, 1)},
      {"bigbird_b5_g0_r50", bigbird(5, 0, 50)},
      {"axial_rows_w10", axial(SparsePattern::axial_rows, 10)},
      {"axial_rows_w64", axial(SparsePattern::axial_rows, 64)},
      {"axial_columns_w10", axial(SparsePattern::axial_columns, 10)},
      {"axial_columns_w3", axial(SparsePattern::axial_columns, 3)},
      {"criss_cross_w9", axial(SparsePattern::criss_cross, 9)},
      {"criss_cross_w5", axial(SparsePattern::criss_cross, 5)},
  };
}

struct Shape {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded = false, masks = false, causal = false;
};

std::vector<Shape> shapes() {
  return {
      {"n1", 1, 1, 1, 1, 8, 8},
      {"n7", 1, 2, 7, 7, 8, 4},
      {"n100_padded", 2, 2, 100, 100, 16, 24, true},
      {"n257", 1, 1, 257, 257, 32, 32},
      {"masks", 3, 2, 150, 150, 16, 16, true, true},
      {"nq_lt_nk", 1, 2, 50, 130, 16, 16},
      {"nq_gt_nk", 1, 1, 130, 50, 16, 16},
      {"causal", 2, 2, 100, 100, 16, 16, false, false, true},
      {"causal_masks", 2, 1, 140, 140, 16, 16, true, true, true},
      {"causal_nq_lt_nk", 1, 1, 60, 140, 8, 8, false, false, true},
      {"causal_nq_gt_nk", 1, 1, 140, 60, 8, 8, false, false, true},
  };
}

struct Case {
  PatternCase pattern;
  Shape shape;
};

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (const auto& p : pattern_cases())
    for (const auto& s : shapes()) out.push_back({p, s});
  return out;
}

Problem make_problem(const Shape& s, std::uint64_t seed = 0) {
  Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, s.padded, 31 + s.Nq + s.Nk + seed);
  if (s.masks) pr.random_masks(5 + s.Nk, 0.7, 0.8);
  pr.params.causal = s.causal;
  pr.params.seed = 1234;
  return pr;
}

// Oracle key sets of every (b, h, i), and the largest.
struct OracleSets {
  std::vector<std::vector<std::int32_t>> keys;  // [(b * H + h) * Nq + i]
  std::size_t largest = 0;
  std::size_t total_active = 0;  // sum of set sizes over active queries
};
OracleSets oracle_sets(Problem& pr, const SparseConfig& config) {
  OracleSets s;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        s.keys.push_back(reference::key_set(pr.params, config, b, h, i));
        s.largest = std::max(s.largest, s.keys.back().size());
        s.total_active += s.keys.back().size();
      }
  return s;
}

// Fast output and lse against the oracle within the rule.
void expect_matches_oracle(Problem& pr, const SparseConfig& config, int threads = 0) {
  const OracleSets sets = oracle_sets(pr, config);
  const auto ref = reference::attention(pr.params, config);
  std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), 12345.0f);
  pr.params.lse = lse.data();
  const auto fast = pr.run(config, threads);
  pr.params.lse = nullptr;
  const std::int64_t n = std::max<std::int64_t>(1, static_cast<std::int64_t>(sets.largest));
  const double tol = pr.tolerance(n);
  double err = 0;
  for (std::size_t x = 0; x < fast.size(); ++x) {
    const double diff = std::abs(double(fast[x]) - ref.o[x]);
    err = std::max(err, std::isnan(diff) ? std::numeric_limits<double>::infinity() : diff);
  }
  EXPECT_LE(err, tol) << "largest key set " << sets.largest;
  const double vmax = max_abs_v(pr);
  const double tol_lse = vmax > 0 ? tol / vmax : tol;
  for (std::size_t row = 0; row < lse.size(); ++row) {
    if (std::isinf(ref.lse[row])) {
      ASSERT_TRUE(std::isinf(lse[row]) && lse[row] < 0) << "row " << row << ": " << lse[row];
    } else {
      ASSERT_LE(std::abs(double(lse[row]) - ref.lse[row]), tol_lse) << "row " << row;
    }
  }
}

class SparseCases : public ::testing::TestWithParam<Case> {};

// One thread here (the thread counts are compared bit for bit below, on the larger shapes):
// OpenMP's barriers cost milliseconds on a loaded machine, and this grid has ~200 cases.
TEST_P(SparseCases, OutputAndLseMatchOracleWithinRule) {
  Problem pr = make_problem(GetParam().shape);
  expect_matches_oracle(pr, GetParam().pattern.config, 1);
}

TEST_P(SparseCases, VisibleKeysEqualOracleExactly) {
  Problem pr = make_problem(GetParam().shape);
  const SparseConfig& config = GetParam().pattern.config;
  const OracleSets sets = oracle_sets(pr, config);
  std::size_t k = 0;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const auto fast = detail::sparse_visible_keys(pr.params, config, b, h);
      ASSERT_EQ(fast.size(), static_cast<std::size_t>(pr.Nq));
      for (std::int64_t i = 0; i < pr.Nq; ++i, ++k)
        ASSERT_EQ(fast[static_cast<std::size_t>(i)], sets.keys[k]) << "b " << b << " h " << h << " i " << i;
    }
  // The pairs the fast path reports attending are exactly these sets.
  pr.params.num_threads = 1;
  const RunInfo info = attention(pr.params, config);
  EXPECT_EQ(info.attention_scores, sets.total_active);
}

INSTANTIATE_TEST_SUITE_P(Patterns, SparseCases, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) {
                           return info.param.pattern.name + "_" + info.param.shape.name;
                         });

// Thread counts and masks, on the shapes with masks (B, H > 1, many groups, with and without
// causal).
class SparseMaskedCases : public ::testing::TestWithParam<Case> {};

TEST_P(SparseMaskedCases, SameBitsAtOneTwoAndThreeThreads) {
  Problem pr = make_problem(GetParam().shape);
  const SparseConfig& config = GetParam().pattern.config;
  const auto one = pr.run(config, 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(config, 2)));
  EXPECT_TRUE(bitwise_equal(one, pr.run(config, 3)));
}

TEST_P(SparseMaskedCases, MasksRespected) {
  Problem pr = make_problem(GetParam().shape);
  expect_masks_respected(pr, GetParam().pattern.config);
}

std::vector<Case> masked_cases() {
  std::vector<Case> out;
  for (const auto& c : all_cases())
    if (c.shape.masks) out.push_back(c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Patterns, SparseMaskedCases, ::testing::ValuesIn(masked_cases()),
                         [](const auto& info) {
                           return info.param.pattern.name + "_" + info.param.shape.name;
                         });

// ---- Special cases: patterns that cover everything are dense attention. ----

TEST(Sparse, LocalWindowCoveringEverythingIsDense) {
  Problem pr(2, 2, 77, 91, 24, 24, true, 5);
  pr.random_masks(3, 0.8, 0.9);
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(pr.run(local(91)), dense), pr.tolerance());
  EXPECT_LE(max_abs_diff(pr.run(local(1000)), dense), pr.tolerance());
}

TEST(Sparse, LongformerAllGlobalIsDense) {
  Problem pr(2, 2, 90, 90, 16, 16, false, 6);
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(pr.run(longformer(1, 90)), dense), pr.tolerance());
  EXPECT_LE(max_abs_diff(pr.run(longformer(0, 90)), dense), pr.tolerance());
}

TEST(Sparse, CausalLocalWindowCoveringEverythingIsCausalDense) {
  Problem pr(2, 2, 100, 100, 16, 16, true, 7);
  pr.random_masks(4, 0.8, 0.9);
  pr.params.causal = true;
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(pr.run(local(100)), dense), pr.tolerance());
  // With Nq < Nk too (the queries are the last positions).
  Problem cross(1, 2, 40, 130, 16, 16, false, 8);
  cross.params.causal = true;
  const auto dense_cross = cross.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(cross.run(local(130)), dense_cross), cross.tolerance());
}

TEST(Sparse, OtherCoveringPatternsAreDense) {
  Problem pr(1, 2, 64, 64, 16, 16, false, 9);
  const auto dense = pr.run(DenseConfig{});
  const double tol = pr.tolerance();
  EXPECT_LE(max_abs_diff(pr.run(fixed(64, 1)), dense), tol);      // one block
  EXPECT_LE(max_abs_diff(pr.run(fixed(8, 8)), dense), tol);       // every position a summary
  EXPECT_LE(max_abs_diff(pr.run(bigbird(32, 0, 0)), dense), tol); // two blocks, neighbours
  EXPECT_LE(max_abs_diff(pr.run(bigbird(8, 0, 8)), dense), tol);  // all other blocks random
  EXPECT_LE(max_abs_diff(pr.run(axial(SparsePattern::axial_rows, 64)), dense), tol);
  EXPECT_LE(max_abs_diff(pr.run(axial(SparsePattern::axial_columns, 1)), dense), tol);
  EXPECT_LE(max_abs_diff(pr.run(strided(0, 1)), dense), tol);
  EXPECT_LE(max_abs_diff(pr.run(dilated(64, 1)), dense), tol);
}

// ---- Inputs and outputs. ----

TEST(Sparse, Bf16InputsMatchOracle) {
  for (const auto& p : pattern_cases()) {
    Problem pr(2, 2, 100, 100, 16, 16, true, 11);
    pr.random_masks(2, 0.8, 0.9);
    pr.params.causal = p.config.pattern == SparsePattern::bigbird;
    pr.use_bf16();
    SCOPED_TRACE(p.name);
    expect_matches_oracle(pr, p.config, 2);
    // The same values as floats give the same sets; the outputs agree within the rule.
    const auto bf = pr.output();
    pr.use_f32();
    EXPECT_LE(max_abs_diff(pr.run(p.config, 1), bf), pr.tolerance());
  }
}

TEST(Sparse, BroadcastKeyValueHeadsAndCustomScale) {
  // K and V with head stride 0 (one K/V head shared by every query head), a negative scale.
  for (const auto& p : pattern_cases()) {
    Problem pr(2, 3, 90, 90, 16, 8, true, 17);
    pr.params.k_head_stride = 0;
    pr.params.v_head_stride = 0;
    pr.params.scale = -0.3f;
    pr.params.seed = 5;
    SCOPED_TRACE(p.name);
    expect_matches_oracle(pr, p.config, 1);
  }
}

TEST(Sparse, FullyMaskedBatchElementGivesZerosAndMinusInfinity) {
  for (const auto& p : pattern_cases()) {
    Problem pr(3, 2, 60, 60, 8, 8, false, 12);
    pr.random_masks(6, 0.9, 0.9);
    std::fill(pr.key_mask.begin() + 60, pr.key_mask.begin() + 120, 0);  // batch 1: no key
    std::fill(pr.query_mask.begin() + 120, pr.query_mask.end(), 0);     // batch 2: no query
    SCOPED_TRACE(p.name);
    std::vector<float> lse(3 * 2 * 60, 7.0f);
    pr.params.lse = lse.data();
    pr.run(p.config, 2);
    for (std::int64_t b = 1; b < 3; ++b)
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t i = 0; i < 60; ++i) {
          for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(b, h, i)[c], 0.0f);
          ASSERT_EQ(lse[static_cast<std::size_t>((b * 2 + h) * 60 + i)], -std::numeric_limits<float>::infinity());
        }
    pr.params.lse = nullptr;
    expect_matches_oracle(pr, p.config, 1);
  }
}

TEST(Sparse, EmptyCausalSetsGiveZerosAndMinusInfinity) {
  // Nq > Nk with causal: the first Nq - Nk queries precede every key (p < 0) and see nothing.
  for (const auto& p : pattern_cases()) {
    Problem pr(1, 1, 30, 10, 8, 8, false, 13);
    pr.params.causal = true;
    std::vector<float> lse(30, 7.0f);
    pr.params.lse = lse.data();
    pr.run(p.config);
    SCOPED_TRACE(p.name);
    for (std::int64_t i = 0; i < 20; ++i) {
      for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(0, 0, i)[c], 0.0f);
      ASSERT_EQ(lse[static_cast<std::size_t>(i)], -std::numeric_limits<float>::infinity());
    }
    pr.params.lse = nullptr;
  }
}

TEST(Sparse, LongKeyListsAreStreamed) {
  // Key lists longer than the packed chunk (1024 keys): a Longformer global query sees all
  // 1500 keys; BigBird with 300-key blocks sees 3 to 5 blocks.
  for (const SparseConfig& config : {longformer(3, 50), bigbird(300, 1, 1)}) {
    Problem pr(1, 1, 1500, 1500, 8, 8, false, 14);
    pr.random_masks(9, 0.9, 1.0);
    expect_matches_oracle(pr, config, 2);
  }
}

TEST(Sparse, WorkspaceReuseAndRunInfo) {
  Problem pr(2, 2, 200, 200, 16, 16, false, 15);
  const SparseConfig config = strided(8, 20);
  Workspace ws;
  pr.params.num_threads = 2;
  const RunInfo first = attention(pr.params, config, &ws);
  const auto a = pr.output();
  const RunInfo second = attention(pr.params, config, &ws);
  EXPECT_TRUE(bitwise_equal(a, pr.output()));
  EXPECT_GT(first.workspace_bytes, 0u);
  EXPECT_LE(first.workspace_bytes, ws.capacity_bytes());
  EXPECT_EQ(first.attention_scores, second.attention_scores);
  EXPECT_GT(second.seconds_total, 0.0);
  EXPECT_GT(second.attention.seconds, 0.0);
  // Extra memory O(N): far below one N x N score matrix per head.
  EXPECT_LT(first.workspace_bytes, std::size_t{2} * 2 * 200 * 200 * sizeof(float) * 4);
}

// ---- BigBird's random blocks. ----

// The definition's draw written plainly: the candidate list materialised, a full array shuffle.
std::vector<std::int64_t> plain_random_blocks(std::uint64_t seed, std::int64_t head, std::int64_t qb,
                                              std::int64_t nb, std::int64_t G, std::int64_t R) {
  const std::int64_t g = std::min(G, nb);
  if (qb >= 0 && qb < g) return {};
  std::vector<std::int64_t> cand;
  for (std::int64_t c = g; c < nb; ++c)
    if (c < qb - 1 || c > qb + 1) cand.push_back(c);
  const std::int64_t n = static_cast<std::int64_t>(cand.size());
  const std::uint64_t stream = (static_cast<std::uint64_t>(head) << 32) | static_cast<std::uint32_t>(qb);
  std::vector<std::int64_t> out;
  for (std::int64_t t = 0; t < std::min(R, n); ++t) {
    const std::uint64_t u = detail::random_bits(seed, stream, static_cast<std::uint64_t>(t));
    __extension__ using u128 = unsigned __int128;
    const std::int64_t x = t + static_cast<std::int64_t>((u128{u} * static_cast<u128>(n - t)) >> 64);
    std::swap(cand[static_cast<std::size_t>(t)], cand[static_cast<std::size_t>(x)]);
    out.push_back(cand[static_cast<std::size_t>(t)]);
  }
  return out;
}

TEST(SparseBigBird, RandomBlocksFollowTheDefinition) {
  for (std::int64_t nb : {1, 2, 3, 5, 17, 200})
    for (std::int64_t G : {0, 1, 3})
      for (std::int64_t R : {0, 1, 3, 70, 500})
        for (std::int64_t qb = -3; qb < nb; ++qb)
          for (std::int64_t head : {0, 5}) {
            std::vector<std::int64_t> out(static_cast<std::size_t>(nb) + 1), work(spec::bigbird_work_size(nb));
            const std::int64_t r = spec::bigbird_random_blocks(77, head, qb, nb, G, R, out.data(), work.data());
            out.resize(static_cast<std::size_t>(r));
            const auto plain = plain_random_blocks(77, head, qb, nb, G, R);
            ASSERT_EQ(out, plain) << "nb " << nb << " G " << G << " R " << R << " qb " << qb;
            // Distinct, in range, outside the window and the global blocks.
            std::set<std::int64_t> distinct(out.begin(), out.end());
            ASSERT_EQ(distinct.size(), out.size());
            for (std::int64_t blk : out) {
              ASSERT_GE(blk, std::min(G, nb));
              ASSERT_LT(blk, nb);
              ASSERT_TRUE(blk < qb - 1 || blk > qb + 1);
            }
          }
}

TEST(SparseBigBird, RandomBlocksAreRoughlyUniform) {
  // 20 candidates (nb = 24, G = 1, window of block 10), 2 draws: each candidate is drawn with
  // probability 1/10; over 20000 (seed, head) pairs each count is 2000 +- 5 sigma (sigma ~ 42).
  std::map<std::int64_t, int> count;
  std::vector<std::int64_t> out(24), work(spec::bigbird_work_size(24));
  for (std::uint64_t seed = 0; seed < 2000; ++seed)
    for (std::int64_t head = 0; head < 10; ++head) {
      const std::int64_t r = spec::bigbird_random_blocks(seed, head, 10, 24, 1, 2, out.data(), work.data());
      ASSERT_EQ(r, 2);
      for (std::int64_t t = 0; t < r; ++t) ++count[out[static_cast<std::size_t>(t)]];
    }
  ASSERT_EQ(count.size(), 20u);
  for (const auto& [blk, c] : count) EXPECT_NEAR(c, 2000, 5 * 42) << "block " << blk;
}

TEST(SparseBigBird, SeedAndHeadDecideRandomBlocks) {
  Problem pr(1, 2, 256, 256, 16, 16, false, 16);
  const SparseConfig config = bigbird(16, 1, 2);
  pr.params.seed = 1;
  const auto a0 = detail::sparse_visible_keys(pr.params, config, 0, 0);
  const auto a1 = detail::sparse_visible_keys(pr.params, config, 0, 1);
  const auto out_a = pr.run(config);
  EXPECT_TRUE(bitwise_equal(out_a, pr.run(config)));  // same seed, same bits
  pr.params.seed = 2;
  const auto b0 = detail::sparse_visible_keys(pr.params, config, 0, 0);
  EXPECT_NE(a0, a1);  // heads draw their own blocks
  EXPECT_NE(a0, b0);  // so do seeds
  EXPECT_GT(max_abs_diff(out_a, pr.run(config)), 1e-3);
  // Every query of a block shares its set (blocks are in key coordinates).
  for (std::int64_t i = 0; i < 256; ++i) EXPECT_EQ(a0[static_cast<std::size_t>(i)], a0[static_cast<std::size_t>(i / 16 * 16)]);
}

TEST(Sparse, InspectionChecksItsArguments) {
  Problem pr(1, 1, 10, 10, 8, 8);
  EXPECT_THROW(detail::sparse_visible_keys(pr.params, local(2), 1, 0), Error);
  EXPECT_THROW(detail::sparse_visible_keys(pr.params, local(2), 0, -1), Error);
  EXPECT_THROW(detail::sparse_visible_keys(pr.params, local(2), 0, 0, 10), Error);
  EXPECT_EQ(detail::sparse_visible_keys(pr.params, local(2), 0, 0, 0), (std::vector<std::int32_t>{0, 1, 2}));
}

// ---- Bad configurations. ----

void expect_error(const AttentionParams& params, const SparseConfig& config, const std::string& what) {
  try {
    attention(params, config);
    ADD_FAILURE() << "no error, expected one naming " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Sparse, BadConfigsThrowNamingTheParameter) {
  Problem pr(1, 1, 16, 16, 8, 8);
  auto with = [](auto change) {
    SparseConfig c;
    change(c);
    return c;
  };
  expect_error(pr.params, with([](SparseConfig& c) { c.window = -1; }), "SparseConfig.window");
  expect_error(pr.params, with([](SparseConfig& c) { c.dilation = 0; }), "SparseConfig.dilation");
  expect_error(pr.params, with([](SparseConfig& c) { c.stride = 0; }), "SparseConfig.stride");
  expect_error(pr.params, with([](SparseConfig& c) { c.pattern = SparsePattern::fixed; c.summary = 0; }),
               "SparseConfig.summary");
  expect_error(pr.params, with([](SparseConfig& c) { c.pattern = SparsePattern::fixed; c.summary = c.stride + 1; }),
               "SparseConfig.summary");
  // summary is read by the fixed pattern only: other patterns accept any value.
  SparseConfig narrow = with([](SparseConfig& c) { c.pattern = SparsePattern::strided; c.stride = 3; });
  EXPECT_NO_THROW(attention(pr.params, narrow));
  expect_error(pr.params, with([](SparseConfig& c) { c.global_tokens = -1; }), "SparseConfig.global_tokens");
  expect_error(pr.params, with([](SparseConfig& c) { c.block_size = 0; }), "SparseConfig.block_size");
  expect_error(pr.params, with([](SparseConfig& c) { c.global_blocks = -2; }), "SparseConfig.global_blocks");
  expect_error(pr.params, with([](SparseConfig& c) { c.random_blocks = -1; }), "SparseConfig.random_blocks");
  expect_error(pr.params, with([](SparseConfig& c) { c.width = 0; }), "SparseConfig.width");
  expect_error(pr.params, with([](SparseConfig& c) { c.pattern = static_cast<SparsePattern>(42); }),
               "SparseConfig.pattern");
  // Dropout must be in [0, 1); the backward needs the forward's lse.
  pr.params.dropout = 1.0f;
  expect_error(pr.params, SparseConfig{}, "params.dropout");
  pr.params.dropout = 0.0f;
  std::vector<float> g(pr.q.size());
  GradientParams grads{pr.o.data(), nullptr, g.data(), g.data(), g.data(), g.data()};
  try {
    attention_backward(pr.params, grads, SparseConfig{});
    ADD_FAILURE() << "no error for grads.lse = nullptr";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("grads.lse"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace smyrf::test
