#include "models/tokenizer.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "models/corpus.h"
#include "smyrf/smyrf.h"

namespace smyrf::models {
namespace {

constexpr int kReserved = 6;
constexpr char32_t kSeparator = U'\u2581';

std::u32string to_u32(std::string_view utf8) {
  std::u32string out;
  const auto* s = reinterpret_cast<const unsigned char*>(utf8.data());
  for (std::size_t i = 0; i < utf8.size();) {  // valid UTF-8 (checked by the caller)
    const unsigned char c = s[i];
    const std::size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::int32_t utf16_length(const std::u32string& s) {
  std::int32_t n = 0;
  for (char32_t c : s) n += c > 0xFFFF ? 2 : 1;
  return n;
}

}  // namespace

std::u32string nfkc_code_points(std::string_view utf8) {
  // ICU lengths are int32_t.
  if (utf8.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    throw Error("smyrf: tokenizer: text of " + std::to_string(utf8.size()) + " bytes: longer than 2^31 - 1 bytes");
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) throw Error(std::string("smyrf: tokenizer: ICU NFKC unavailable: ") + u_errorName(status));
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(
      icu::StringPiece(utf8.data(), static_cast<std::int32_t>(utf8.size())));
  const icu::UnicodeString out = nfkc->normalize(in, status);
  if (U_FAILURE(status)) throw Error(std::string("smyrf: tokenizer: NFKC failed: ") + u_errorName(status));
  std::string bytes;
  out.toUTF8String(bytes);
  return to_u32(bytes);
}

Tokenizer Tokenizer::from_pieces(std::vector<std::pair<std::string, double>> pieces) {
  Tokenizer t;
  t.utf16_length_.reserve(pieces.size());
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    check_utf8(pieces[id].first, "tokenizer: piece " + std::to_string(id));
    if (!std::isfinite(pieces[id].second))
      throw Error("smyrf: tokenizer: piece " + std::to_string(id) + ": score " +
                  std::to_string(pieces[id].second) + " is not a finite number");
    const std::u32string p = to_u32(pieces[id].first);
    t.utf16_length_.push_back(utf16_length(p));
    if (static_cast<int>(id) < kReserved || p.empty()) continue;
    t.pieces_[p] = {pieces[id].second, static_cast<std::int32_t>(id)};  // the last one wins
    for (std::size_t k = 1; k < p.size(); ++k) t.prefixes_[p.substr(0, k)] = true;
    t.max_symbols_ = std::max(t.max_symbols_, p.size());
  }
  if (t.utf16_length_.empty()) throw Error("smyrf: tokenizer: empty vocabulary");
  // The backward pass steps back by the length of piece 0's text after an unknown symbol; an
  // empty piece 0 would never step back.
  if (t.utf16_length_[0] == 0)
    throw Error("smyrf: tokenizer: piece 0 (the unknown-symbol piece) is empty");
  return t;
}

Tokenizer Tokenizer::load(const std::filesystem::path& vocab_json) {
  std::ifstream in(vocab_json, std::ios::binary);
  if (!in) throw Error("smyrf: tokenizer: cannot open " + vocab_json.string());
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error("smyrf: tokenizer: cannot read " + vocab_json.string());
  // Checked before parsing: the JSON parser's own message for bad bytes names neither the
  // encoding nor the byte offset.
  check_utf8(s.str(), "tokenizer: " + vocab_json.string());
  std::vector<std::pair<std::string, double>> pieces;
  try {
    const nlohmann::json j = nlohmann::json::parse(s.str());
    if (!j.is_array()) throw Error("smyrf: tokenizer: " + vocab_json.string() + ": not an array");
    for (const auto& e : j) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !(e[1].is_number() || e[1].is_null()))
        throw Error("smyrf: tokenizer: " + vocab_json.string() + ": entry " +
                    std::to_string(pieces.size()) + " is not a [piece, score] pair");
      pieces.emplace_back(e[0].get<std::string>(), e[1].is_null() ? 0.0 : e[1].get<double>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("smyrf: tokenizer: " + vocab_json.string() + ": not valid JSON: " + e.what());
  }
  return from_pieces(std::move(pieces));
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  check_utf8(std::string(text), "tokenizer: text");
  std::u32string sym = nfkc_code_points(text);
  if (!sym.empty()) {
    for (char32_t& c : sym)
      if (c == U' ') c = kSeparator;
    sym.insert(sym.begin(), kSeparator);
  }
  const std::size_t n = sym.size();

  // Edges by end position, in increasing start position.
  struct Edge {
    std::size_t start;
    double score;
    std::int32_t id;
  };
  std::vector<std::vector<Edge>> ending(n + 1);
  std::u32string key;
  for (std::size_t i = 0; i < n; ++i) {
    bool matched = false;
    key.clear();
    for (std::size_t len = 1; len <= max_symbols_ && i + len <= n; ++len) {
      key.push_back(sym[i + len - 1]);
      const auto it = pieces_.find(key);
      if (it != pieces_.end()) {
        ending[i + len].push_back({i, it->second.score, it->second.id});
        matched = true;
      }
      if (prefixes_.find(key) == prefixes_.end()) break;
    }
    if (!matched) ending[i + 1].push_back({i, 0.0, 0});
  }
  std::vector<double> best(n + 1, 0.0);
  std::vector<std::int32_t> word(n + 1, 0);
  for (std::size_t end = 0; end <= n; ++end)
    for (const Edge& e : ending[end]) {
      const double score = e.score + best[e.start];
      if (best[end] == 0.0 || score >= best[end]) {
        best[end] = score;
        word[end] = e.id;
      }
    }

  std::vector<std::int32_t> ids;
  for (std::int64_t at = static_cast<std::int64_t>(n); at > 0;) {
    const std::int32_t id = word[static_cast<std::size_t>(at)];
    if (!(id == 0 && !ids.empty() && ids.back() == 0)) ids.push_back(id);
    at -= utf16_length_[static_cast<std::size_t>(id)];
  }
  return {ids.rbegin(), ids.rend()};
}

}  // namespace smyrf::models
