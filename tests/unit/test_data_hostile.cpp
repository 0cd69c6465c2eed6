// Hostile input to the data readers: each kind is refused (or bounded) with an error naming it.
// Reader-level only (no loader, no model), so the sanitizer build runs this file too.
#include <ATen/ATen.h>
#include <sys/stat.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "lathe/core/error.h"
#include "lathe/data/csv.h"
#include "lathe/data/idx.h"
#include "lathe/data/image.h"
#include "lathe/data/tabular.h"
#include "lathe/data/text.h"
#include "lathe/data/transforms.h"
#include "tests/support.h"
#include "tests/unit/data_support.h"

using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::idx_bytes;
using lathe::testing::TempDir;
using lathe::testing::write_gz;
using lathe::testing::write_text;

namespace {

void put_be32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xFF);
}

/// A PNG whose header (IHDR, CRC fixed up) declares width x height; its pixels are a 2x2's.
std::string png_declaring(uint32_t width, uint32_t height) {
  std::string png = lathe::data::encode_png(at::zeros({1, 2, 2}, at::kByte));
  // 8-byte signature, then IHDR: length(4) "IHDR"(4) width(4) height(4) ... CRC over type+data.
  put_be32(png, 16, width);
  put_be32(png, 20, height);
  const auto crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17));  // "IHDR" + 13 data bytes
  put_be32(png, 29, crc);
  return png;
}

/// A JPEG whose frame header (SOF0) declares width x height.
std::string jpeg_declaring(uint16_t width, uint16_t height) {
  std::string jpg = lathe::data::encode_jpeg(at::zeros({3, 8, 8}, at::kByte));
  const size_t sof = jpg.find("\xFF\xC0");
  EXPECT_NE(sof, std::string::npos);
  // FF C0, length(2), precision(1), height(2), width(2)
  jpg[sof + 5] = static_cast<char>(height >> 8);
  jpg[sof + 6] = static_cast<char>(height & 0xFF);
  jpg[sof + 7] = static_cast<char>(width >> 8);
  jpg[sof + 8] = static_cast<char>(width & 0xFF);
  return jpg;
}

}  // namespace

// ---- paths ---------------------------------------------------------------------------------

TEST(HostilePaths, FolderFifoOrDeviceWhereAFileIsExpectedIsNamed) {
  TempDir dir;
  expect_error<DataError>([&] { lathe::data::read_csv(dir.path()); },
                          {dir.path().string(), "cannot open the CSV file", "it is a folder"});
  expect_error<DataError>([&] { lathe::data::read_idx("/dev/zero"); },
                          {"/dev/zero", "it is a device"});
  expect_error<DataError>([&] { lathe::data::read_image("/dev/zero"); },
                          {"/dev/zero", "it is a device"});
  expect_error<DataError>([&] { lathe::data::WordPiece("/dev/zero"); },
                          {"/dev/zero", "vocabulary", "it is a device"});
  ASSERT_EQ(::mkfifo((dir / "pipe").c_str(), 0600), 0);
  expect_error<DataError>([&] { lathe::data::read_csv(dir / "pipe"); }, {"pipe", "FIFO"});
}

// ---- IDX -----------------------------------------------------------------------------------

TEST(HostileIdx, GzipBombIsRefusedBeforeAllocating) {
  TempDir dir;
  // 100 bytes inflate to 100 bytes; the header claims 60000 x 1000 x 1000 bytes (60 GB).
  write_gz(dir / "bomb.gz", idx_bytes(0x08, {60000, 1000, 1000}, std::string(100, '\0')));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "bomb.gz"); },
                          {"bomb.gz", "60000000000 values", "cannot inflate to that much"});
  // A real bomb: 16 MB of zeros after a header promising 4 values stops after 5 bytes.
  write_gz(dir / "long.gz", idx_bytes(0x08, {4}, std::string(16 << 20, '\0')));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "long.gz"); },
                          {"long.gz", "file is longer"});
  // Dimensions whose product overflows 64 bits.
  write_text(dir / "wide.idx", idx_bytes(0x0E, std::vector<uint32_t>(8, 0xFFFFFFFFu), "x"));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "wide.idx"); },
                          {"wide.idx", "too many values"});
  // An empty tensor whose other sizes overflow the strides (the IDX fuzzer found it).
  write_text(dir / "zero.idx", idx_bytes(0x08, {0, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, ""));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "zero.idx"); },
                          {"zero.idx", "too many values"});
}

TEST(HostileIdx, FloatLabelsAreRefused) {
  TempDir dir;
  write_text(dir / "train-images-idx3-ubyte", idx_bytes(0x08, {1, 1, 1}, "x"));
  write_text(dir / "train-labels-idx1-ubyte", idx_bytes(0x0D, {1}, std::string("\x3F\xC0\0\0", 4)));
  expect_error<DataError>([&] { lathe::data::load_idx_split(dir.path(), "train"); },
                          {"train-labels-idx1-ubyte", "labels of type Float", "integer type"});
}

TEST(HostileIdx, LabelBeyondTheClassLimitIsRefused) {
  TempDir dir;
  write_text(dir / "train-images-idx3-ubyte", idx_bytes(0x08, {1, 1, 1}, "x"));
  write_text(dir / "train-labels-idx1-ubyte", idx_bytes(0x0C, {1}, "\x7F\xFF\xFF\xFF"));
  expect_error<DataError>([&] { lathe::data::load_idx_split(dir.path(), "train"); },
                          {"train-labels-idx1-ubyte", "label 2147483647", "[0, 65536)"});
  write_text(dir / "train-labels-idx1-ubyte", idx_bytes(0x09, {1}, "\xFF"));  // int8 -1
  expect_error<DataError>([&] { lathe::data::load_idx_split(dir.path(), "train"); }, {"label -1"});
}

// ---- CSV -----------------------------------------------------------------------------------

TEST(HostileCsv, RepeatedHeaderNameIsAnError) {
  expect_error<DataError>([] { lathe::data::parse_csv("a,y, a\n1,2,3\n", "t.csv"); },
                          {"t.csv:1", "names column 'a' twice", "columns 1 and 3"});
}

TEST(HostileCsv, UnterminatedQuoteNamesItsLineAndCountsWhatItSwallowed) {
  const std::string text = "a,b\n1,2\n3,\"oops\n4,5\n6,7\n";
  expect_error<DataError>([&] { lathe::data::parse_csv(text, "t.csv"); },
                          {"t.csv:3", "unterminated quoted field", "lines 3 to 5"});
  lathe::data::CsvOptions skip;
  skip.skip_bad_rows = true;
  const auto t = lathe::data::parse_csv(text, "t.csv", skip);
  EXPECT_EQ(t.num_rows(), 1);
  EXPECT_EQ(t.skipped, 3);  // the records on lines 3, 4 and 5
}

TEST(HostileCsv, InfinityInANumericColumnIsAnErrorAndNanIsMissing) {
  double v = 0;
  EXPECT_FALSE(lathe::data::parse_number("inf", v));
  EXPECT_TRUE(lathe::data::is_non_finite_number(" -Infinity "));
  const auto t = lathe::data::parse_csv("x,y\n1,0\ninf,1\nnan,1\n", "t.csv");
  EXPECT_TRUE(t.is_missing(2, 0));
  expect_error<DataError>([&] { lathe::data::infer_task(t, "x"); },
                          {"t.csv:3", "column 'x'", "'inf'", "not a finite number"});
}

TEST(HostileCsv, ANumberBeyondADoublesRangeIsAnErrorNeverACategory) {
  // 1e400 overflows a double: the non-finite rule (an error naming file, line, column and cell),
  // not a silent retyping of the column as categorical. 1e-400 underflows: it reads as 0, as
  // Python's float() reads it, and a subnormal reads as itself.
  double v = 1;
  EXPECT_FALSE(lathe::data::parse_number("1e400", v));
  EXPECT_TRUE(lathe::data::is_non_finite_number("1e400"));
  EXPECT_TRUE(lathe::data::is_non_finite_number(" -2e308"));
  EXPECT_TRUE(lathe::data::parse_number("1e-400", v));
  EXPECT_EQ(v, 0.0);
  EXPECT_TRUE(lathe::data::parse_number("-1e-400", v));
  EXPECT_TRUE(v == 0.0 && std::signbit(v));
  EXPECT_TRUE(lathe::data::parse_number("4e-320", v));
  EXPECT_EQ(v, 4e-320);
  EXPECT_FALSE(lathe::data::is_non_finite_number("1e-400"));
  EXPECT_FALSE(lathe::data::is_non_finite_number("1e400x"));
  const auto t = lathe::data::parse_csv("x1,x2,y\n-0.005,1,a\n1e400,2,b\n0.5,1e-400,a\n",
                                        "wine.csv");
  lathe::data::TabularSpec spec;
  spec.target = "y";
  spec.all.impute = "mean";
  expect_error<DataError>([&] { lathe::data::TabularPreprocessor::fit(t, spec); },
                          {"wine.csv:3: column 'x1' is numeric but holds '1e400', which is not a "
                           "finite number", "write a missing value such as NA"});
  // Without the overflowing cell the column is numeric, and the underflowing cell is a 0.
  const auto ok = lathe::data::parse_csv("x1,x2,y\n-0.005,1,a\n0.5,1e-400,a\n", "ok.csv");
  const auto prep = lathe::data::TabularPreprocessor::fit(ok, spec);
  EXPECT_EQ(prep.feature_names(), (std::vector<std::string>{"x1", "x2"}));
  EXPECT_EQ(prep.transform(ok).inputs[1][1].item<float>(), 0.0f);
  // Records answered later follow the same rule: file, line, column, cell.
  expect_error<DataError>(
      [&] { prep.transform(lathe::data::parse_csv("x1,x2,y\n1,-1e999,a\n", "new.csv")); },
      {"new.csv:2: column 'x2' is numeric but holds '-1e999', which is not a finite number"});
}

TEST(HostileCsv, ZeroAndMinusZeroAreOneClass) {
  const auto t = lathe::data::parse_csv("x,y\n1,0\n2,-0\n3, 1\n4,0.0\n", "t.csv");
  const at::Tensor strata = lathe::data::target_strata(t, "y");
  EXPECT_EQ(strata.max().item<int64_t>(), 1);  // two classes: 0 and 1
  EXPECT_EQ(strata[0].item<int64_t>(), strata[1].item<int64_t>());
  EXPECT_EQ(strata[0].item<int64_t>(), strata[3].item<int64_t>());
}

// ---- images --------------------------------------------------------------------------------

TEST(HostileImage, HeaderOverThePixelLimitIsRefusedBeforeDecoding) {
  expect_error<DataError>(
      [] { lathe::data::decode_image(png_declaring(65500, 65500), "bomb.png"); },
      {"bomb.png", "65500x65500", "over the limit of 89478485", "data.max_image_pixels"});
  expect_error<DataError>(
      [] { lathe::data::decode_image(jpeg_declaring(65500, 65500), "bomb.jpg"); },
      {"bomb.jpg", "65500x65500", "over the limit"});
  // The limit is configurable: a 2x2 PNG against a limit of 3 pixels.
  const std::string small = lathe::data::encode_png(at::zeros({1, 2, 2}, at::kByte));
  expect_error<DataError>([&] { lathe::data::decode_image(small, "s.png", 1, 0, 3); },
                          {"s.png", "over the limit of 3"});
  EXPECT_EQ(lathe::data::decode_image(small, "s.png", 1, 0, 4).sizes(),
            (std::vector<int64_t>{1, 2, 2}));
}

TEST(HostileImage, ResizeOfAnExtremeAspectRatioIsBounded) {
  lathe::data::Rng rng(1);
  const auto resize = lathe::data::transforms::resize_shorter(224);
  expect_error<DataError>(
      [&] {
        resize(at::zeros({3, 1, 100000}, at::kByte), rng);
      },
      {"a 1x100000 image would become 224x22400000", "over the 89478485"});
}

TEST(HostileImage, HiddenClassFoldersAreIgnored) {
  TempDir dir;
  const std::string png = lathe::data::encode_png(at::zeros({3, 2, 2}, at::kByte));
  for (const char* cls : {"ant", "bee", ".ipynb_checkpoints"}) {
    std::filesystem::create_directories(dir / cls);
    write_text(dir / cls / "a.png", png);
  }
  const lathe::data::ImageFolder folder(dir.path());
  EXPECT_EQ(folder.classes(), (std::vector<std::string>{"ant", "bee"}));
  EXPECT_EQ(folder.size(), 2);
}

// ---- text ----------------------------------------------------------------------------------

TEST(HostileText, SpecialTokensTokenizeInLinearTime) {
  const lathe::data::WordPiece tok({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"}, true, "v");
  std::string text;
  for (int i = 0; i < 200000; ++i) text += "[SEP]";  // 1 MB; the quadratic scan took hours
  const auto start = std::chrono::steady_clock::now();
  const auto tokens = tok.tokenize(text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(tokens.size(), 200000u);
  EXPECT_LT(s, 10.0);
}

TEST(HostileText, RepeatedVocabTokenTakesItsLastIdAsHuggingFace) {
  const lathe::data::WordPiece tok({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "x", "hello"},
                                   true, "vocab.txt");
  EXPECT_EQ(tok.token_id("hello"), 6);
  EXPECT_EQ(tok.encode("hello", 0).ids, (std::vector<int64_t>{2, 6, 3}));
}

TEST(HostileText, InvalidUtf8IsAnErrorNamingFileAndLineOrReplaced) {
  const lathe::data::WordPiece tok({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "ok"}, true, "v");
  const auto t = lathe::data::parse_csv("text,label\nok,a\n\"ok\xFF\xFEok\",b\n", "t.csv");
  expect_error<DataError>(
      [&] { lathe::data::TextClassificationCsv(t, "text", "label", tok, 8); },
      {"t.csv:3", "column 'text' is not valid UTF-8", "byte 3", "data.invalid_utf8=replace"});
  const lathe::data::TextClassificationCsv replaced(t, "text", "label", tok, 8, true);
  EXPECT_EQ(replaced.size(), 2);
  expect_error<DataError>(
      [] {
        lathe::data::WordPiece({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "\xC0\xAF"}, true, "v.txt");
      },
      {"v.txt:5", "not valid UTF-8"});
}

TEST(HostileText, LabelsWithStraySpacesAreOneClass) {
  const lathe::data::WordPiece tok({"[PAD]", "[UNK]", "[CLS]", "[SEP]"}, true, "v");
  const auto t = lathe::data::parse_csv("text,label\na,pos\nb, pos\nc,neg \n", "t.csv");
  const lathe::data::TextClassificationCsv d(t, "text", "label", tok, 4);
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"neg", "pos"}));
}
