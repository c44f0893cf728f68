// The SentencePiece unigram segmentation of the Universal Sentence Encoder's TF.js package
// (@tensorflow-models/universal-sentence-encoder 1.3.3, Tokenizer.encode), reimplemented so
// that the ids are identical, quirks included:
//   * the text is NFKC-normalised (ICU); a non-empty text gets U+2581 in front and every
//     U+0020 space becomes U+2581 (other white space is kept);
//   * symbols are Unicode code points; pieces 0..5 are reserved and never matched;
//   * lattice: at each position every vocabulary piece that starts there; where none does,
//     one "unknown" edge of one symbol, id 0, score 0. A JSON null score counts as 0; a piece
//     listed twice keeps its last id and score;
//   * Viterbi over end positions, candidates in increasing start position; a candidate
//     replaces the best so far when its score (piece score + best at its start, in double)
//     is >= the best, or when the best is exactly 0 (the reference's "unset" marker);
//   * the backward pass steps back by the UTF-16 length of the chosen piece's text (for id 0
//     that is the length of piece 0's text), and runs of id 0 collapse to one.
// Id 0 is also the model's padding id, so unknown symbols do not reach the transformer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace smyrf::models {

class Tokenizer {
 public:
  // vocab.json: an array of [piece, score] pairs. Throws smyrf::Error on a malformed file.
  static Tokenizer load(const std::filesystem::path& vocab_json);
  // Builds from pieces directly (tests).
  static Tokenizer from_pieces(std::vector<std::pair<std::string, double>> pieces);

  // Token ids of a UTF-8 text. Throws smyrf::Error if the text is not valid UTF-8.
  std::vector<std::int32_t> encode(std::string_view text) const;
  std::size_t size() const { return utf16_length_.size(); }

 private:
  struct Entry {
    double score;
    std::int32_t id;
  };
  std::unordered_map<std::u32string, Entry> pieces_;   // matchable pieces
  std::unordered_map<std::u32string, bool> prefixes_;  // every proper prefix of a piece
  std::vector<std::int32_t> utf16_length_;             // per id, of the piece's text
  std::size_t max_symbols_ = 0;
};

// NFKC normalisation of UTF-8 text (ICU), as String.prototype.normalize('NFKC').
std::u32string nfkc_code_points(std::string_view utf8);

}  // namespace smyrf::models
