// Stop strings over a stream of text pieces: output cut before the first stop (earliest end, then
// earliest start), matches across piece boundaries, only a possible stop prefix held back, and never
// half a UTF-8 character in an emitted chunk. A brute-force reference checks random streams.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

// tests/ has no include path to actors/ (one CMake line per suite), hence the relative path.
#include "stop_matcher.hpp"
#include "unicode_text.hpp"

using inflight::engine::stop_matcher;

namespace {

size_t longest(const std::vector<std::string>& stops) {
  size_t n = 0;
  for (const auto& s : stops) n = std::max(n, s.size());
  return n;
}

struct streamed {
  std::string text;      // concatenation of every chunk (and the flush when no stop matched)
  bool stopped = false;
  int stop_piece = -1;   // index of the piece on which push() first returned true
};

// Pushes `pieces` one by one, checking the held-back bound after each; flushes if no stop matched.
streamed run(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  stop_matcher matcher(stops);
  streamed result;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const bool stopped = matcher.push(pieces[i], result.text);
    CHECK(matcher.held_back().size() + 1 <= std::max<size_t>(longest(stops), 1));
    if (stopped && result.stop_piece < 0) result.stop_piece = int(i);
    CHECK(stopped == (result.stop_piece >= 0));  // once stopped, always stopped
  }
  result.stopped = matcher.stopped();
  if (!result.stopped) matcher.flush(result.text);
  return result;
}

// The definition, by brute force on the whole text: the first end position where any stop ends, and
// of the stops ending there the longest. Returns the output and whether a stop matched.
std::pair<std::string, bool> reference(const std::vector<std::string>& stops, const std::string& text) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = 0;
    for (const auto& s : stops)
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) best = std::max(best, s.size());
    if (best > 0) return {text.substr(0, end - best), true};
  }
  return {text, false};
}

}  // namespace

TEST_CASE("a single stop truncates before it and discards the rest") {
  const auto r = run({"STOP"}, {"hello ", "world STOP and more", " never seen"});
  CHECK(r.text == "hello world ");
  CHECK(r.stopped);
  CHECK(r.stop_piece == 1);
}

TEST_CASE("a stop split across pieces is found and its prefix is held back") {
  stop_matcher matcher({"\n\nUser:"});
  std::string out;
  CHECK_FALSE(matcher.push("Answer.", out));
  CHECK(out == "Answer.");
  CHECK_FALSE(matcher.push("\n", out));
  CHECK(out == "Answer.");  // "\n" may start the stop: held back
  CHECK(matcher.held_back() == "\n");
  CHECK_FALSE(matcher.push("\nUs", out));
  CHECK(matcher.held_back() == "\n\nUs");
  CHECK(out == "Answer.");
  CHECK(matcher.push("er: next", out));
  CHECK(out == "Answer.");
  CHECK(matcher.matched_stop() == "\n\nUser:");
  CHECK(matcher.held_back().empty());
}

TEST_CASE("a held-back prefix that stops matching is released") {
  stop_matcher matcher({"\n\nUser:"});
  std::string out;
  CHECK_FALSE(matcher.push("a\n\nUs", out));
  CHECK(out == "a");
  CHECK_FALSE(matcher.push("ually", out));
  CHECK(out == "a\n\nUsually");
  CHECK(matcher.held_back().empty());
}

TEST_CASE("overlapping prefixes restart inside the held-back text") {
  // "ab" is held, "a" breaks "abc" but starts a new candidate "a", then "bc" completes it.
  auto r = run({"abc"}, {"a", "b", "a", "b", "c", "x"});
  CHECK(r.text == "ab");
  CHECK(r.stop_piece == 4);
  r = run({"abc"}, {"ababc"});
  CHECK(r.text == "ab");
  r = run({"aab"}, {"a", "a", "a", "b"});  // the held "aa" shifts by one: "a" is released
  CHECK(r.text == "a");
}

TEST_CASE("a stop at the very start gives empty output") {
  auto r = run({"<end>"}, {"<end>", "tail"});
  CHECK(r.stopped);
  CHECK(r.text.empty());
  r = run({"<end>"}, {"<e", "nd>"});
  CHECK(r.stopped);
  CHECK(r.text.empty());
}

TEST_CASE("text without a stop passes through and flush returns the held-back tail") {
  stop_matcher matcher({"###"});
  std::string out;
  CHECK_FALSE(matcher.push("one # two #", out));
  CHECK(out == "one # two ");
  CHECK_FALSE(matcher.push("#", out));
  CHECK(out == "one # two ");
  matcher.flush(out);
  CHECK(out == "one # two ##");
  CHECK_FALSE(matcher.stopped());
  CHECK(matcher.matched_stop().empty());
}

TEST_CASE("no stop strings is a pass-through") {
  stop_matcher matcher({});
  std::string out;
  CHECK_FALSE(matcher.push("anything at all", out));
  CHECK(out == "anything at all");
  CHECK(matcher.held_back().empty());
}

TEST_CASE("of several stops the earliest end wins and then the earliest start") {
  // "cd" ends (at 4) before "bcde" (at 5) although "bcde" starts earlier.
  auto r = run({"bcde", "cd"}, {"abcdef"});
  CHECK(r.text == "ab");
  {
    stop_matcher matcher({"bcde", "cd"});
    std::string out;
    matcher.push("abcdef", out);
    CHECK(matcher.matched_stop() == "cd");
  }
  // "xyz" and "yz" end at the same byte: the longer one cuts earlier.
  stop_matcher matcher({"yz", "xyz"});
  std::string out;
  CHECK_FALSE(matcher.push("0x", out));
  CHECK(out == "0");
  CHECK(matcher.push("yz!", out));
  CHECK(out == "0");
  CHECK(matcher.matched_stop() == "xyz");
}

TEST_CASE("a stop that is a prefix of another ends first and wins") {
  stop_matcher matcher({"User:", "User"});
  std::string out;
  CHECK(matcher.push("Hi User: x", out));
  CHECK(out == "Hi ");
  CHECK(matcher.matched_stop() == "User");
}

TEST_CASE("a stop inside another stop's prefix is found") {
  // "bc" ends inside the held-back candidate "abcd": the automaton's suffix links must report it.
  const auto r = run({"abcd", "bc"}, {"xa", "b", "c", "d"});
  CHECK(r.text == "xa");
  CHECK(r.stop_piece == 2);
}

TEST_CASE("empty pieces change nothing") {
  stop_matcher matcher({"END"});
  std::string out;
  CHECK_FALSE(matcher.push("", out));
  CHECK_FALSE(matcher.push("E", out));
  CHECK_FALSE(matcher.push("", out));
  CHECK(out.empty());
  CHECK(matcher.held_back() == "E");
  CHECK(matcher.push("ND", out));
  CHECK(out.empty());
}

TEST_CASE("pushes after a stop append nothing and report the stop") {
  stop_matcher matcher({"!"});
  std::string out;
  CHECK(matcher.push("done! rest", out));
  CHECK(out == "done");
  CHECK(matcher.push("more text", out));
  CHECK(matcher.push("", out));
  matcher.flush(out);
  CHECK(out == "done");
  CHECK(matcher.stopped());
}

TEST_CASE("an empty stop string is rejected") {
  CHECK_THROWS_AS(stop_matcher({"ok", ""}), std::invalid_argument);
  CHECK_THROWS_WITH(stop_matcher({"ok", ""}), "stop string 1 is empty");
}

TEST_CASE("duplicate stop strings behave as one") {
  stop_matcher matcher({"##", "##"});
  std::string out;
  CHECK(matcher.push("a##", out));
  CHECK(out == "a");
  CHECK(matcher.matched_stop() == "##");
}

TEST_CASE("multi-byte stops cut and hold back on character boundaries") {
  // "。" is E3 80 82 and "、" E3 80 81: they share two bytes, so a piece "、" walks two bytes into "。".
  auto r = run({"。"}, {"你好", "、", "世界", "。", "再见"});
  CHECK(r.text == "你好、世界");
  CHECK(r.stop_piece == 3);
  // "🙂" F0 9F 99 82 vs "🙃" F0 9F 99 83; a stop whose first character is multi-byte after ASCII.
  r = run({"a🙂"}, {"xa", "🙃", "a", "🙂", "z"});
  CHECK(r.text == "xa🙃");
  // Held-back text begins with a stop's first byte, a lead byte: every chunk and every held-back
  // suffix is valid UTF-8 when the pieces are.
  const std::vector<std::string> chars = {"a", "é", "。", "、", "世", "🙂", "🙃", "\n", "ü"};
  const std::vector<std::string> stops = {"。🙂", "é世", "🙃🙃🙃"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<std::string> pieces;
    std::string text;
    const int num_pieces = int(rng() % 20);
    for (int p = 0; p < num_pieces; ++p) {
      std::string piece;
      const int num_chars = int(rng() % 4);  // 0..3 characters, so some pieces are empty
      for (int c = 0; c < num_chars; ++c) piece += chars[rng() % chars.size()];
      pieces.push_back(piece);
      text += piece;
    }
    stop_matcher matcher(stops);
    std::string all;
    for (const auto& piece : pieces) {
      std::string chunk;
      const bool stopped = matcher.push(piece, chunk);
      CHECK(inflight::unicode::is_valid_utf8(chunk));
      CHECK(inflight::unicode::is_valid_utf8(matcher.held_back()));
      all += chunk;
      if (stopped) break;
    }
    matcher.flush(all);
    CHECK(all == reference(stops, text).first);
  }
}

TEST_CASE("random streams agree with the brute-force definition") {
  // A small alphabet makes partial matches, overlaps and nested stops frequent.
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops(1 + rng() % 3);
    for (auto& s : stops) {
      const size_t len = 1 + rng() % 4;
      for (size_t k = 0; k < len; ++k) s += char('a' + rng() % 3);
    }
    std::string text;
    const size_t len = rng() % 24;
    for (size_t k = 0; k < len; ++k) text += char('a' + rng() % 4);  // 'd' never matches
    std::vector<std::string> pieces;
    for (size_t pos = 0; pos < text.size();) {
      const size_t n = std::min<size_t>(rng() % 5, text.size() - pos);
      pieces.push_back(text.substr(pos, n));
      pos += n;
    }
    const auto r = run(stops, pieces);
    const auto [expected, expected_stop] = reference(stops, text);
    CHECK(r.text == expected);
    CHECK(r.stopped == expected_stop);
    if (r.text != expected || r.stopped != expected_stop) {
      FAIL_CHECK("trial " << trial << " text '" << text << "'");
      break;
    }
  }
}
