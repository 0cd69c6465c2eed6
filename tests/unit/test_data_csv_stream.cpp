// CsvChunkReader: the chunks of a file hold read_csv's rows and line numbers, quoted fields that
// span lines included, and its errors cite the file's own lines.
#include <gtest/gtest.h>

#include "lathe/core/error.h"
#include "lathe/data/csv.h"
#include "lathe/data/csv_stream.h"
#include "tests/support.h"

using lathe::testing::expect_error;
using lathe::testing::TempDir;

TEST(CsvChunks, ChunksHoldReadCsvsRowsAndLinesAcrossQuotedNewlines) {
  TempDir dir;
  const std::string text =
      "\xEF\xBB\xBF\nid,text\n1,plain\n2,\"two\nlines\"\n\n3,\"a \"\"quote\"\", then\nmore\"\n"
      "4, \"spaced\"\n5,last";
  lathe::testing::write_text(dir / "t.csv", text);
  const lathe::data::CsvTable whole = lathe::data::read_csv(dir / "t.csv");
  for (const int64_t chunk : {1, 2, 100}) {
    lathe::data::CsvChunkReader reader(dir / "t.csv", chunk);
    EXPECT_EQ(reader.columns(), whole.columns);
    std::vector<std::vector<std::string>> rows;
    std::vector<int64_t> lines;
    int64_t chunks = 0;
    for (lathe::data::CsvTable t; reader.next(t); ++chunks) {
      EXPECT_LE(t.num_rows(), chunk);
      rows.insert(rows.end(), t.rows.begin(), t.rows.end());
      lines.insert(lines.end(), t.lines.begin(), t.lines.end());
    }
    EXPECT_EQ(rows, whole.rows) << "chunk " << chunk;
    EXPECT_EQ(lines, whole.lines) << "chunk " << chunk;
    EXPECT_EQ(chunks, chunk == 1 ? 5 : chunk == 2 ? 3 : 1);
    EXPECT_EQ(reader.bytes_read(), reader.file_size());
  }
  // A bad record deep in the file: its own line, as read_csv says it.
  lathe::testing::write_text(dir / "bad.csv", "a,b\n1,2\n3,4\n5\n");
  lathe::data::CsvChunkReader reader(dir / "bad.csv", 1);
  lathe::data::CsvTable t;
  EXPECT_TRUE(reader.next(t));
  EXPECT_TRUE(reader.next(t));
  expect_error<lathe::DataError>([&] { reader.next(t); },
                                 {"bad.csv:4: malformed record: expected 2 fields"});
  lathe::testing::write_text(dir / "empty.csv", "\n\n");
  expect_error<lathe::DataError>([&] { lathe::data::CsvChunkReader(dir / "empty.csv", 4); },
                                 {"empty.csv: empty CSV file"});
}
