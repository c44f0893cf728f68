#include "embed.h"

#include <omp.h>

#include <bit>
#include <cstdio>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/rng.h"
#include "models/corpus.h"
#include "models/use_lite.h"
#include "models/variants.h"
#include "output.h"
#include "progress.h"
#include "smyrf/smyrf.h"

namespace smyrf::cli {

std::string npy_float32(const float* data, std::size_t rows, std::size_t cols) {
  static_assert(std::endian::native == std::endian::little, "the header says little-endian");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  // Magic (6) + version (2) + header length (2) + header + padding + '\n': a multiple of 64.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const std::size_t bytes = rows * cols * sizeof(float);
  const std::size_t at = out.size();
  out.resize(at + bytes);
  if (bytes > 0) std::memcpy(out.data() + at, data, bytes);
  return out;
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int run_embed(const EmbedOptions& o) {
  const bool npy = ends_with(o.output, ".npy");
  if (!npy && !ends_with(o.output, ".jsonl"))
    throw Error("smyrf: embed: --output " + o.output + ": must end in .npy or .jsonl");
  if (o.corpus.empty()) throw Error("smyrf: embed: --corpus: required (a JSONL file, a folder of .txt files or SpamAssassin's)");
  if (o.max_tokens < 0) throw Error("smyrf: embed: --max-tokens = " + std::to_string(o.max_tokens) + ": must be >= 0");
  const models::AttentionVariant variant = [&] {
    try {
      return models::parse_variant(o.variant);
    } catch (const Error& e) {
      throw Error(std::string("smyrf: embed: --variant: ") + e.what());
    }
  }();
  const std::string ids_path = npy ? o.output + ".ids.json" : "";
  check_output_paths({{"--output", o.output}, {"--output (ids)", ids_path}});
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();

  const models::Corpus corpus = models::load_corpus(o.corpus, models::parse_mail_text(o.mail_text));
  const models::UseLite model = models::UseLite::load(o.model);
  const std::size_t n = corpus.docs.size();
  constexpr int kDim = models::UseLite::kDim;
  std::vector<float> emb(n * kDim);
  std::vector<std::size_t> tokens(n);
  Progress progress(n, o.quiet);
  const models::EncodeOptions enc{o.max_tokens};
  parallel_items(n, threads, &progress, "embed " + variant.label(), [&](std::size_t i) {
    const std::vector<std::int32_t> ids = model.tokenizer().encode(corpus.docs[i].text);
    tokens[i] = o.max_tokens > 0 ? std::min<std::size_t>(ids.size(), static_cast<std::size_t>(o.max_tokens)) : ids.size();
    // The same per-text seed as smyrf eval's (the text's index in the corpus).
    const std::vector<float> e = model.embed(
        ids, [&](int, std::int64_t len) { return variant.config_for(len); }, enc,
        detail::mix64(o.seed ^ (0x9e3779b97f4a7c15ULL * (i + 1))));
    std::copy(e.begin(), e.end(), emb.begin() + static_cast<std::ptrdiff_t>(i * kDim));
  });
  progress.clear();

  nlohmann::json ids = nlohmann::json::array();
  for (const models::Document& d : corpus.docs) ids.push_back(d.id);
  if (npy) {
    write_files({{o.output, npy_float32(emb.data(), n, kDim)}, {ids_path, ids.dump() + "\n"}});
  } else {
    std::string lines;
    for (std::size_t i = 0; i < n; ++i) {
      nlohmann::ordered_json row;
      row["id"] = corpus.docs[i].id;
      row["tokens"] = tokens[i];
      row["variant"] = o.variant;
      row["embedding"] = std::vector<float>(emb.begin() + static_cast<std::ptrdiff_t>(i * kDim),
                                            emb.begin() + static_cast<std::ptrdiff_t>((i + 1) * kDim));
      lines += row.dump() + "\n";
    }
    write_files({{o.output, lines}});
  }
  std::printf("smyrf embed: %zu texts, %s, %d-d embeddings (max tokens %lld): wrote %s%s%s\n", n,
              variant.label().c_str(), kDim, static_cast<long long>(o.max_tokens), o.output.c_str(),
              npy ? " and " : "", ids_path.c_str());
  return 0;
}

}  // namespace smyrf::cli
