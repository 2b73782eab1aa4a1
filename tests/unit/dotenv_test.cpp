// The .env parser and document: the syntax dotenv and docker compose accept, errors that name
// file and line but no value, and writing back that keeps the file's comments and order.
#include "daemon/secrets/dotenv.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace orgd::secrets {
namespace {

DotenvFile parse_ok(std::string_view text) {
  auto parsed = parse_dotenv(text, ".env");
  EXPECT_TRUE(parsed.ok()) << parsed.error().message;
  if (!parsed) return {};
  return std::move(parsed).value();
}

std::string value_of(const DotenvFile& file, std::string_view key) {
  const DotenvEntry* e = file.find(key);
  EXPECT_NE(e, nullptr) << key;
  return e == nullptr ? "<absent>" : std::string{e->value.expose()};
}

std::string error_of(std::string_view text) {
  auto parsed = parse_dotenv(text, "conf/.env");
  EXPECT_FALSE(parsed.ok());
  return parsed ? std::string{} : parsed.error().message;
}

TEST(Dotenv, PlainEntriesCommentsAndBlankLines) {
  const auto file = parse_ok(
      "# a comment\n"
      "\n"
      "A=1\n"
      "  B = two words  \n"
      "\t# indented comment\n"
      "C=value # trailing comment\n"
      "D=val#ue\n"
      "E=\n"
      "F= # only a comment\n"
      "G=a=b=c\n");
  ASSERT_EQ(file.entries.size(), 7u);
  EXPECT_EQ(value_of(file, "A"), "1");
  EXPECT_EQ(value_of(file, "B"), "two words");
  EXPECT_EQ(value_of(file, "C"), "value");
  EXPECT_EQ(value_of(file, "D"), "val#ue");
  EXPECT_EQ(value_of(file, "E"), "");
  EXPECT_EQ(value_of(file, "F"), "");
  EXPECT_EQ(value_of(file, "G"), "a=b=c");
  EXPECT_EQ(file.find("A")->line, 3);
  EXPECT_EQ(file.find("G")->line, 10);
  EXPECT_TRUE(file.warnings.empty());
}

TEST(Dotenv, ExportPrefix) {
  const auto file = parse_ok("export A=1\nexport\tB='x'\nexport=3\nexporter=4\n");
  EXPECT_EQ(value_of(file, "A"), "1");
  EXPECT_EQ(value_of(file, "B"), "x");
  EXPECT_EQ(value_of(file, "export"), "3");
  EXPECT_EQ(value_of(file, "exporter"), "4");
}

TEST(Dotenv, SingleQuotesAreLiteral) {
  const auto file = parse_ok(R"(A='a \n b # not a comment $HOME "x"' # comment
B=''
)");
  EXPECT_EQ(value_of(file, "A"), R"(a \n b # not a comment $HOME "x")");
  EXPECT_EQ(value_of(file, "B"), "");
}

TEST(Dotenv, DoubleQuotesTakeEscapes) {
  const auto file = parse_ok(R"(A="l1\nl2\tt\rr \"q\" \\ \$HOME $PATH \x"
B="#not comment" # comment
)");
  EXPECT_EQ(value_of(file, "A"), "l1\nl2\tt\rr \"q\" \\ $HOME $PATH \\x");
  EXPECT_EQ(value_of(file, "B"), "#not comment");
}

TEST(Dotenv, NoInterpolation) {
  const auto file = parse_ok("A=1\nB=${A}\nC=\"$A\"\n");
  EXPECT_EQ(value_of(file, "B"), "${A}");
  EXPECT_EQ(value_of(file, "C"), "$A");
}

TEST(Dotenv, MultiLineQuotedValues) {
  const auto file = parse_ok(
      "KEY=\"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\"\n"
      "S='one\ntwo'\n"
      "AFTER=x\n");
  EXPECT_EQ(value_of(file, "KEY"), "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----");
  EXPECT_EQ(value_of(file, "S"), "one\ntwo");
  EXPECT_EQ(file.find("S")->line, 4);
  EXPECT_EQ(file.find("AFTER")->line, 6);
}

TEST(Dotenv, CrlfLineEndings) {
  const auto file = parse_ok("# c\r\nA=1\r\nB='x'\r\nC=\"l1\r\nl2\"\r\n\r\nD=last");
  EXPECT_EQ(value_of(file, "A"), "1");
  EXPECT_EQ(value_of(file, "B"), "x");
  EXPECT_EQ(value_of(file, "C"), "l1\nl2");
  EXPECT_EQ(value_of(file, "D"), "last");
  EXPECT_EQ(file.find("D")->line, 7);
}

TEST(Dotenv, DuplicateKeysWarnAndTheLastWins) {
  const auto file = parse_ok("A=first-canary\nB=x\nA=second-canary\n");
  ASSERT_EQ(file.entries.size(), 2u);
  EXPECT_EQ(file.entries[0].key, "A");
  EXPECT_EQ(value_of(file, "A"), "second-canary");
  EXPECT_EQ(file.find("A")->line, 3);
  ASSERT_EQ(file.warnings.size(), 1u);
  EXPECT_EQ(file.warnings[0].line, 3);
  EXPECT_EQ(file.warnings[0].message,
            ".env:3: A is also set on line 1; the last one (this line) is used");
  EXPECT_EQ(file.warnings[0].message.find("canary"), std::string::npos);
}

TEST(Dotenv, KeyNames) {
  EXPECT_TRUE(valid_dotenv_key("_A1"));
  EXPECT_TRUE(valid_dotenv_key("lower_case"));
  EXPECT_FALSE(valid_dotenv_key("1A"));
  EXPECT_FALSE(valid_dotenv_key("A.B"));
  EXPECT_FALSE(valid_dotenv_key("A-B"));
  EXPECT_FALSE(valid_dotenv_key(""));
  EXPECT_EQ(error_of("OK=1\nA.B=canary\n"),
            "conf/.env:2: not a valid name: a name holds letters, digits and _ only");
  EXPECT_EQ(error_of("A-B=canary\n"),
            "conf/.env:1: not a valid name: a name holds letters, digits and _ only");
  EXPECT_EQ(error_of("1A=canary\n"),
            "conf/.env:1: expected KEY=value (a name starts with a letter or _)");
  EXPECT_EQ(error_of("=canary\n"),
            "conf/.env:1: expected KEY=value (a name starts with a letter or _)");
}

// Every error names file and line, and none holds any part of a value.
TEST(Dotenv, ErrorsNameFileAndLineButNoValue) {
  EXPECT_EQ(error_of("A=1\n\nghp_canarycanarycanary\n"), "conf/.env:3: no '=' after the name");
  EXPECT_EQ(error_of("export ghp_canary\n"), "conf/.env:1: no '=' after the name");
  EXPECT_EQ(error_of("A=1\nB=\"canary-open\nstill\n"),
            "conf/.env:2: unterminated double-quoted value (opened on this line, never closed)");
  EXPECT_EQ(error_of("B='canary-open\n"),
            "conf/.env:1: unterminated single-quoted value (opened on this line, never closed)");
  EXPECT_EQ(error_of("A=\"canary\"canary2\n"),
            "conf/.env:1: unexpected text after the closing quote of A");
  EXPECT_EQ(error_of("A='x\ny'canary\n"),
            "conf/.env:2: unexpected text after the closing quote of A");
  for (const std::string text : {"A=1\nB=\"canary-open\nstill\n", "A=\"canary\"canary2\n",
                                 "ghp_canary\n", "A=ca\nB=nary\"\n'canary"}) {
    auto parsed = parse_dotenv(text, "f");
    if (!parsed) {
      EXPECT_EQ(parsed.error().message.find("canary"), std::string::npos);
    }
  }
}

TEST(Dotenv, HostileInputs) {
  using namespace std::string_literals;
  EXPECT_EQ(error_of("A=1\nB=can\0ary\n"s), "conf/.env:2: NUL byte");
  EXPECT_EQ(error_of(std::string(kMaxDotenvBytes + 1, 'A')),
            "conf/.env: larger than 1048576 bytes");
  // A huge line within the bound is one value.
  const std::string huge(kMaxDotenvBytes - 10, 'x');
  const auto file = parse_ok("H=" + huge + "\n");
  EXPECT_EQ(file.find("H")->value.size(), huge.size());
  // Too many entries.
  std::string many;
  for (std::size_t i = 0; i <= kMaxDotenvEntries; ++i) many += "K" + std::to_string(i) + "=v\n";
  EXPECT_EQ(error_of(many), "conf/.env:" + std::to_string(kMaxDotenvEntries + 1) + ": more than " +
                                std::to_string(kMaxDotenvEntries) + " entries");
  // Odd but valid bytes.
  const auto odd = parse_ok("A=\xff\xfe\nB=\"\\\\\"\nC=\\\n");
  EXPECT_EQ(value_of(odd, "A"), "\xff\xfe");
  EXPECT_EQ(value_of(odd, "B"), "\\");
  EXPECT_EQ(value_of(odd, "C"), "\\");
  // A backslash right before the end of the text inside quotes.
  EXPECT_FALSE(parse_dotenv("A=\"x\\", "f").ok());
  EXPECT_FALSE(parse_dotenv("A='", "f").ok());
  EXPECT_TRUE(parse_ok("").entries.empty());
  EXPECT_TRUE(parse_ok("\n\n\r\n#").entries.empty());
}

TEST(DotenvDocument, UnchangedRendersByteForByte) {
  const std::string text =
      "# header\r\n\nexport A=1 # one\n  B='two'\nC=\"l1\nl2\"  # multi\nD=x\nA=again";
  auto doc = DotenvDocument::parse(text, ".env");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc.value().render().expose(), text);
  EXPECT_EQ(doc.value().keys(), (std::vector<std::string>{"A", "B", "C", "D"}));
  EXPECT_EQ(doc.value().get("A")->expose(), "again");
  EXPECT_EQ(doc.value().get("Z"), nullptr);
  EXPECT_EQ(doc.value().warnings().size(), 1u);
}

TEST(DotenvDocument, SetReplaceRemoveKeepCommentsAndOrder) {
  auto parsed = DotenvDocument::parse("# header\nexport A=1 # one\nB='two'\"\"\n", ".env");
  // `'two'""` is text after a closing quote.
  EXPECT_FALSE(parsed.ok());
  auto doc = std::move(DotenvDocument::parse("# header\nexport A=1 # one\nB='two'#c\nC=3", ".env"))
                 .value();
  ASSERT_TRUE(doc.set("A", Secret::from("new value")).ok());
  ASSERT_TRUE(doc.set("B", Secret::from("plain")).ok());
  ASSERT_TRUE(doc.set("NEW", Secret::from("it's \"quoted\"\n$x")).ok());
  EXPECT_TRUE(doc.remove("C"));
  EXPECT_FALSE(doc.remove("C"));
  EXPECT_FALSE(doc.set("bad-name", Secret::from("x")).ok());
  EXPECT_FALSE(doc.set("N", Secret::from(std::string_view{"a\0b", 3})).ok());
  const Secret out = doc.render();
  EXPECT_EQ(out.expose(),
            "# header\nexport A='new value' # one\nB=plain #c\n"
            "NEW=\"it's \\\"quoted\\\"\\n\\$x\"\n");
  auto again = parse_dotenv(out.expose(), "out");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(value_of(again.value(), "A"), "new value");
  EXPECT_EQ(value_of(again.value(), "B"), "plain");
  EXPECT_EQ(value_of(again.value(), "NEW"), "it's \"quoted\"\n$x");
  EXPECT_EQ(again.value().find("C"), nullptr);
}

TEST(DotenvDocument, SetOnALastLineWithoutNewlineAndCrlf) {
  auto doc = std::move(DotenvDocument::parse("A=1\r\nB=2", ".env")).value();
  ASSERT_TRUE(doc.set("A", Secret::from("x y")).ok());
  ASSERT_TRUE(doc.set("C", Secret::from("3")).ok());
  EXPECT_EQ(doc.render().expose(), "A='x y'\r\nB=2\nC=3\n");
}

// Found by the fuzzer: a comment after a closing quote with a CR before it.
TEST(DotenvDocument, ACommentAfterAQuoteStaysACommentForABareValue) {
  auto doc = std::move(DotenvDocument::parse("B=\"x\"\r# c\r\nC='y'#d\n", ".env")).value();
  doc.blank_values();
  auto back = parse_dotenv(doc.render().expose(), "out");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(value_of(back.value(), "B"), "");
  EXPECT_EQ(value_of(back.value(), "C"), "");
  ASSERT_TRUE(doc.set("B", Secret::from("bare")).ok());
  EXPECT_EQ(value_of(parse_dotenv(doc.render().expose(), "out").value(), "B"), "bare");
}

TEST(DotenvDocument, SetReplacesTheWinningDuplicate) {
  auto doc = std::move(DotenvDocument::parse("A=1\nA=2\n", ".env")).value();
  ASSERT_TRUE(doc.set("A", Secret::from("3")).ok());
  EXPECT_EQ(doc.render().expose(), "A=1\nA=3\n");
  EXPECT_EQ(doc.get("A")->expose(), "3");
}

TEST(DotenvDocument, BlankValuesClearsEveryOccurrence) {
  auto doc = std::move(DotenvDocument::parse(
                           "# tokens\nexport GH=ghp_canary # github\nGH=two\nM=\"a\nb\"\n", ".env"))
                 .value();
  doc.blank_values();
  EXPECT_EQ(doc.render().expose(), "# tokens\nexport GH= # github\nGH=\nM=\n");
}

// parse(render(x)) == x for values of every awkward kind.
TEST(DotenvDocument, RenderRoundTripsAwkwardValues) {
  const std::vector<std::string> values = {"",
                                           "plain",
                                           " lead",
                                           "trail ",
                                           "a b",
                                           "#hash",
                                           "a #b",
                                           "it's",
                                           "\"dq\"",
                                           "back\\slash",
                                           "$HOME",
                                           "${X}",
                                           "line1\nline2",
                                           "cr\rlf",
                                           "crlf\r\n",
                                           "tab\there",
                                           "'",
                                           "\"",
                                           "\\",
                                           "'\"\\$\n\r\t",
                                           "=",
                                           "x=y",
                                           "\xff\xfe",
                                           "-----BEGIN KEY-----\nAAA\n-----END KEY-----\n"};
  DotenvDocument doc;
  for (std::size_t i = 0; i < values.size(); ++i) {
    ASSERT_TRUE(doc.set("K" + std::to_string(i), Secret::from(values[i])).ok());
  }
  const Secret text = doc.render();
  auto back = parse_dotenv(text.expose(), "rendered");
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back.value().entries.size(), values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(value_of(back.value(), "K" + std::to_string(i)), values[i]) << i;
  }
  // And through a document parsed back, changed and rendered again.
  auto doc2 = std::move(DotenvDocument::parse(text.expose(), "rendered")).value();
  ASSERT_TRUE(doc2.set("K0", Secret::from("changed")).ok());
  auto back2 = parse_dotenv(doc2.render().expose(), "again");
  ASSERT_TRUE(back2.ok());
  EXPECT_EQ(value_of(back2.value(), "K0"), "changed");
  EXPECT_EQ(value_of(back2.value(), "K12"), values[12]);
}

TEST(DotenvDocument, QuoteChoosesTheSimplestForm) {
  EXPECT_EQ(quote_dotenv_value("abc-1.2/x:y@z").expose(), "abc-1.2/x:y@z");
  EXPECT_EQ(quote_dotenv_value("a b").expose(), "'a b'");
  EXPECT_EQ(quote_dotenv_value("$X").expose(), "'$X'");
  EXPECT_EQ(quote_dotenv_value("it's").expose(), "\"it's\"");
  EXPECT_EQ(quote_dotenv_value("a\r").expose(), "\"a\\r\"");
}

}  // namespace
}  // namespace orgd::secrets
