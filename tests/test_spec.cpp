// The random draws of src/spec/draws.h pinned to golden values: fixed (seed, head, indices) give
// the exact numbers written here. The fast paths and the oracles both read these draws, so a
// change in one can never show up as a mismatch between them; it fails here instead. Doubles
// and floats are written as hexadecimal literals (exact).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "methods/smyrf/clustering.h"
#include "spec/draws.h"

namespace smyrf::test {
namespace {

// The signs of a row of values as a string of '+' and '-'.
template <class T>
std::string signs(const std::vector<T>& x) {
  std::string s;
  for (T v : x) s += v > 0 ? '+' : '-';
  return s;
}

TEST(Spec, SmyrfDirectionsAndOffsets) {
  // seed 42, head 1: components t = 0..4 of rounds 0..2, and the offsets for r = 0.5.
  const double a[3][5] = {
      {-0x1.81583fa05641dp-1, 0x1.0eab190578e73p+0, -0x1.9e67b221e41bep-3, 0x1.8d0d3b6d49f2dp+0,
       0x1.493df44af31eep-1},
      {0x1.d30609de11168p-1, 0x1.00f4d3b6c9318p-1, 0x1.8c290b3e63ba7p-3, 0x1.890cf9b0b1f77p-2,
       0x1.8a8b630a391f2p+0},
      {0x1.9423ecb8b9fd3p+0, 0x1.25e292490db0fp+0, -0x1.feccf8480d52fp-4, -0x1.b6b1bf0d23faep-1,
       0x1.c3bf7f0f5398cp+0}};
  const double offsets[3] = {0x1.e196c5449c14ep-2, 0x1.79756051a658ep-4, 0x1.3d43656155a7ap-2};
  for (int r = 0; r < 3; ++r) {
    for (int t = 0; t < 5; ++t) EXPECT_EQ(spec::smyrf_direction(42, 1, r, t), a[r][t]) << r << " " << t;
    EXPECT_EQ(spec::smyrf_offset(42, 1, r, 0.5f), offsets[r]) << r;
    EXPECT_EQ(spec::smyrf_offset(42, 1, r, 0.0f), 0.0);
  }
  // The fast path's lane layout holds exactly these values (xbox_plus: E = 2).
  SmyrfConfig c;
  c.n_hashes = 3;
  c.r = 0.5f;
  const std::int64_t d = 3;
  const std::size_t lanes = detail::projection_lanes(3, detail::transform_extra_dims(c));
  std::vector<double> dirs(static_cast<std::size_t>(d + 2) * lanes), offs(3);
  detail::make_directions(c, 42, 1, d, lanes, dirs.data(), offs.data());
  for (int r = 0; r < 3; ++r) {
    for (int t = 0; t < d + 2; ++t) EXPECT_EQ(dirs[static_cast<std::size_t>(t) * lanes + r], a[r][t]);
    EXPECT_EQ(offs[static_cast<std::size_t>(r)], offsets[r]);
  }
}

TEST(Spec, ReformerRotations) {
  // seed 3, head 1, round 2, n = 4 columns: R[t][c] for t < 2, c < 3.
  const double want[2][3] = {
      {0x1.9419e47cc1ba7p-1, -0x1.46a0ffcb496e4p+1, 0x1.09a4bdebd94cbp-1},
      {-0x1.f9fa302ec7d38p-1, 0x1.2107d51b9e468p-2, -0x1.ae02d43349ac9p-1}};
  for (int t = 0; t < 2; ++t)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(spec::reformer_rotation(3, 1, 2, 4, t, c), want[t][c]);
  EXPECT_EQ(spec::reformer_stream(1, 2), 0x5245465200000402ull);
}

TEST(Spec, ClusteredHyperplanes) {
  // seed 9, head 2, d = 16: coordinates j < 3 of hyperplanes t < 2.
  const double want[2][3] = {
      {-0x1.59e1fbfec4a5bp-2, 0x1.f25d1fa997181p-6, -0x1.4cff39fa94f24p-3},
      {-0x1.0165d4a692681p-2, 0x1.99aaf33af285dp+0, -0x1.3cb3f2cd3f5c5p-1}};
  for (int t = 0; t < 2; ++t)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(spec::clustered_hyperplane(9, 2, t, j, 16), want[t][j]);
}

TEST(Spec, LinearRandomFeatures) {
  // seed 5, head 3, 6 rows of d = 4 (two blocks, the second truncated): entries 0, 1, 5, 13, 23.
  const int at[5] = {0, 1, 5, 13, 23};
  const double orth[5] = {0x1.0eae03fa1b962p+0, -0x1.b0d254a2856efp-1, -0x1.67817b781255p-1,
                          0x1.6d1771ed056c1p+0, -0x1.472726e988099p+0};
  const double iid[5] = {0x1.35e17ab930d9ap+0, -0x1.ef8136081c893p-1, -0x1.e2645ec4637c9p-2,
                         -0x1.9a8bbea2a260ap-1, -0x1.bcee76c1a7487p+0};
  const auto w = spec::linear_random_features(5, 3, 6, 4, true);
  const auto g = spec::linear_random_features(5, 3, 6, 4, false);
  ASSERT_EQ(w.size(), 24u);
  ASSERT_EQ(g.size(), 24u);
  for (int e = 0; e < 5; ++e) {
    EXPECT_EQ(w[static_cast<std::size_t>(at[e])], orth[e]) << at[e];
    EXPECT_EQ(g[static_cast<std::size_t>(at[e])], iid[e]) << at[e];
  }
}

TEST(Spec, BigBirdRandomBlocks) {
  // seed 77, head 1, query block 5 of 24 blocks, 1 global, 3 random (the short shuffle).
  std::vector<std::int64_t> out(25), work(spec::bigbird_work_size(24));
  ASSERT_EQ(spec::bigbird_random_blocks(77, 1, 5, 24, 1, 3, out.data(), work.data()), 3);
  EXPECT_EQ(std::vector<std::int64_t>(out.begin(), out.begin() + 3),
            (std::vector<std::int64_t>{18, 13, 22}));
  // seed 77, head 2, query block 100 of 200, 2 global, 70 random (the full shuffle).
  std::vector<std::int64_t> o2(201), w2(spec::bigbird_work_size(200));
  ASSERT_EQ(spec::bigbird_random_blocks(77, 2, 100, 200, 2, 70, o2.data(), w2.data()), 70);
  EXPECT_EQ(o2[0], 178);
  EXPECT_EQ(o2[1], 184);
  EXPECT_EQ(o2[69], 161);
  std::uint64_t hash = 0;
  for (int t = 0; t < 70; ++t) hash = hash * 1000003u + static_cast<std::uint64_t>(o2[static_cast<std::size_t>(t)]);
  EXPECT_EQ(hash, 0xd862f125d84503c0ull);
  // A global query block draws nothing.
  EXPECT_EQ(spec::bigbird_random_blocks(77, 1, 0, 24, 1, 3, out.data(), work.data()), 0);
}

TEST(Spec, LinformerProjections) {
  EXPECT_EQ(spec::linformer_word(7, 2, 3, 70), 0xbef9e52a9f9bed18ull);
  // seed 7, head 2, row 3, rank 5: (E, F) of keys 0, 1, 33, 70; s = float(1 / sqrt(5)).
  const float s = 0x1.c9f25cp-2f;
  const std::int64_t keys[4] = {0, 1, 33, 70};
  const float e_want[4] = {-s, -s, -s, -s}, f_want[4] = {s, -s, s, s};
  for (int t = 0; t < 4; ++t) {
    float e = 0, f = 0;
    spec::linformer_projection(7, 2, 3, keys[t], 5, &e, &f);
    EXPECT_EQ(e, e_want[t]) << keys[t];
    EXPECT_EQ(f, f_want[t]) << keys[t];
  }
  // seed 7, head 1, row 2, rank 9, 40 keys (two words): the row form, as float and double.
  std::vector<float> e(40), f(40);
  spec::linformer_projection_row<float>(7, 1, 2, 40, 9, e.data(), f.data());
  EXPECT_EQ(signs(e), "+++--+-+-+--++-++--+-+---+-+++++++-++--+");
  EXPECT_EQ(signs(f), "++++-+---+-++-+-+--+----++++-+--++-+++++");
  for (int j = 0; j < 40; ++j) {
    EXPECT_EQ(e[static_cast<std::size_t>(j)] > 0 ? e[static_cast<std::size_t>(j)] : -e[static_cast<std::size_t>(j)], 0x1.555556p-2f);
    float ej = 0, fj = 0;
    spec::linformer_projection(7, 1, 2, j, 9, &ej, &fj);
    EXPECT_EQ(ej, e[static_cast<std::size_t>(j)]) << j;
    EXPECT_EQ(fj, f[static_cast<std::size_t>(j)]) << j;
  }
  std::vector<double> ed(40);
  spec::linformer_projection_row<double>(7, 1, 2, 40, 9, ed.data(), static_cast<double*>(nullptr));
  for (int j = 0; j < 40; ++j) EXPECT_EQ(ed[static_cast<std::size_t>(j)], double(e[static_cast<std::size_t>(j)]));
}

TEST(Spec, InformerSampleIndex) {
  const std::int64_t want[6] = {20, 29, 1, 30, 25, 25};
  for (int t = 0; t < 6; ++t) EXPECT_EQ(spec::informer_sample_index(11, 5, t, 37), want[t]) << t;
  const std::int64_t big[4] = {258184744, 698971936, 321272399, 311001352};
  for (int t = 0; t < 4; ++t)
    EXPECT_EQ(spec::informer_sample_index(0, 1000, t, 1000000007), big[t]) << t;
}

TEST(Spec, SynthesizerDefaults) {
  EXPECT_EQ(spec::synthesizer_default_w1(13, 1, 2, 3, 8, 16), 0x1.0b15c2p-2f);
  EXPECT_EQ(spec::synthesizer_default_w2(13, 1, 3, 5, 20, 16), -0x1.9275bap-5f);
  EXPECT_EQ(spec::synthesizer_default_logit(13, 1, 4, 6, 20), -0x1.49c2d8p+0f);
}

TEST(Spec, DropoutKeepDecisions) {
  const spec::Dropout drop(0.3f, 99);
  EXPECT_TRUE(drop.active());
  EXPECT_EQ(drop.scale(), 0x1.6db6dcp+0f);
  const std::uint64_t row = drop.row(1, 2, 0, 7);
  EXPECT_EQ(row, 0x16986e2f4e7d93d4ull);
  EXPECT_EQ(drop.row(0, 0, 3, 0), 0x61bac1d9e5527ba8ull);
  std::string keep;
  for (int j = 0; j < 24; ++j) keep += drop.keep(row, j) ? '1' : '0';
  EXPECT_EQ(keep, "111111001011011010011010");
  for (int j = 0; j < 24; ++j)
    EXPECT_EQ(drop.factor(row, j), keep[static_cast<std::size_t>(j)] == '1' ? drop.scale() : 0.0f);
  const spec::Dropout none(0.0f, 99);
  EXPECT_FALSE(none.active());
  EXPECT_EQ(none.scale(), 1.0f);
  for (int j = 0; j < 24; ++j) EXPECT_TRUE(none.keep(row, j));
}

}  // namespace
}  // namespace smyrf::test
