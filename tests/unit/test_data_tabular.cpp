// Data: the CSV reader (RFC 4180, bad records) and tabular preprocessing against scikit-learn.
#include <ATen/ATen.h>

#include "lathe/core/error.h"
#include "lathe/data/csv.h"
#include "lathe/data/split.h"
#include "lathe/data/tabular.h"
#include "tests/unit/data_support.h"

using lathe::ConfigError;
using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
using namespace lathe::data;

namespace {

/// A headerless CSV of numbers → (N, F) float64.
at::Tensor read_matrix(const std::filesystem::path& file) {
  const CsvTable t = read_csv(file, CsvOptions{.header = false});
  at::Tensor m = at::empty({t.num_rows(), static_cast<int64_t>(t.columns.size())}, at::kDouble);
  for (int64_t r = 0; r < t.num_rows(); ++r)
    for (size_t c = 0; c < t.columns.size(); ++c) {
      double v = 0;
      EXPECT_TRUE(parse_number(t.rows[static_cast<size_t>(r)][c], v));
      m[r][static_cast<int64_t>(c)] = v;
    }
  return m;
}

std::vector<int64_t> range(int64_t lo, int64_t hi) {
  std::vector<int64_t> v;
  for (int64_t i = lo; i < hi; ++i) v.push_back(i);
  return v;
}

}  // namespace

TEST(Csv, QuotedFieldsEmbeddedNewlinesAndLineNumbers) {
  const CsvTable t = parse_csv(
      "name,note,score\r\n"
      "\"Smith, J\",\"said \"\"hi\"\"\",1.5\r\n"
      "\n"
      "Doe,\"two\nlines\",  2\n"
      "Roe,,NA\n",
      "people.csv");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"name", "note", "score"}));
  ASSERT_EQ(t.num_rows(), 3);
  EXPECT_EQ(t.rows[0][0], "Smith, J");
  EXPECT_EQ(t.rows[0][1], "said \"hi\"");
  EXPECT_EQ(t.rows[1][1], "two\nlines");
  EXPECT_EQ(t.lines, (std::vector<int64_t>{2, 4, 6}));  // the quoted newline counts
  EXPECT_TRUE(t.is_missing(2, 1));
  EXPECT_TRUE(t.is_missing(2, 2));
  EXPECT_EQ(t.where(2), "people.csv:6");
  double v = 0;
  EXPECT_TRUE(parse_number(t.rows[1][2], v));
  EXPECT_EQ(v, 2.0);
  EXPECT_FALSE(parse_number("2x", v));
  EXPECT_EQ(parse_csv("a;b\n1;2\n", "semi.csv", CsvOptions{.delimiter = ';'}).rows[0][1], "2");
}

TEST(Csv, MalformedRecordsNameFileAndLineOrAreSkipped) {
  const std::string text = "a,b,c\n1,2,3\n4,5\n6,\"7\"x,8\n9,10,11\n12,\"open,13\n";
  expect_error<DataError>(
      [&] { parse_csv(text, "bad.csv"); },
      {"bad.csv:3: malformed record: expected 3 fields (as in the header), got 2",
       "set data.skip_bad_records: true"});
  const CsvTable t = parse_csv(text, "bad.csv", CsvOptions{.skip_bad_rows = true});
  EXPECT_EQ(t.skipped, 3);  // line 3 (short), line 4 (text after a quote), line 6 (unterminated)
  ASSERT_EQ(t.num_rows(), 2);
  EXPECT_EQ(t.rows[1][0], "9");
  expect_error<DataError>([&] { parse_csv("a,b\n1,\"2\"x\n", "q.csv"); },
                          {"q.csv:2", "unexpected 'x' after a closing quote"});
  expect_error<DataError>([&] { parse_csv("a,b\n1,\"2\n", "u.csv"); },
                          {"u.csv:2", "unterminated quoted field"});
  expect_error<DataError>([&] { read_csv("/nonexistent/x.csv"); }, {"x.csv", "no such file"});
  expect_error<DataError>([&] { t.column_index("d"); }, {"no column 'd'", "a, b, c"});
}

TEST(Tabular, WineMatchesScikitLearnPipelines) {
  TempDir dir;
  lathe::testing::run_oracle("tabular_oracle.py", dir);
  const CsvTable table = read_csv(dir / "wine.csv");
  ASSERT_EQ(table.num_rows(), 178);
  TabularSpec spec;
  spec.target = "target";
  spec.all.scale = "standard";
  const auto steps = [&](std::initializer_list<std::string> kv) {
    ColumnSteps s = spec.all;
    for (const auto& item : kv) s = s.with(item, "test");
    return s;
  };
  spec.columns["alcohol"] = steps({"impute=mean"});
  spec.columns["malic_acid"] = steps({"impute=median", "scale=minmax"});
  spec.columns["ash"] = steps({"impute=most_frequent"});
  spec.columns["hue"] = steps({"impute=constant", "fill=1", "outliers=iqr", "scale=none"});
  spec.columns["grade"] = steps({"impute=most_frequent", "scale=none", "encode=onehot"});
  spec.columns["proline"] = steps({"outliers=zscore", "outlier_k=2"});
  spec.columns["magnesium"] = steps({"scale=none"});
  const auto prep = TabularPreprocessor::fit(table.select(range(0, 140)), spec);
  EXPECT_EQ(prep.task(), "classification");
  EXPECT_EQ(prep.classes(), (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  const TabularData out = prep.transform(table);
  const at::Tensor expected = read_matrix(dir / "wine_expected.csv");  // (178, 16)
  ASSERT_EQ(out.inputs.sizes(), expected.sizes());
  EXPECT_TRUE(at::allclose(out.inputs.to(at::kDouble), expected, /*rtol=*/1e-6, /*atol=*/1e-5))
      << (out.inputs.to(at::kDouble) - expected).abs().max().item<double>();
  EXPECT_EQ(prep.feature_names()[5], "grade=high");
  EXPECT_EQ(out.targets.scalar_type(), at::kLong);
  EXPECT_EQ(at::bincount(out.targets).sizes()[0], 3);

  // Saved and loaded, the transform is the same, to the bit.
  prep.save(dir / "prep.json");
  const auto again = TabularPreprocessor::load(dir / "prep.json");
  EXPECT_TRUE(again.transform(table).inputs.equal(out.inputs));
  EXPECT_NE(lathe::testing::read_text(dir / "prep.json").find("\"grade=high\""), std::string::npos);
}

TEST(Tabular, DiabetesRegressionMinMaxAndLabelEncoding) {
  TempDir dir;
  lathe::testing::run_oracle("tabular_oracle.py", dir);
  const CsvTable table = read_csv(dir / "diabetes.csv");
  TabularSpec spec;
  spec.target = "target";
  spec.all.scale = "minmax";
  spec.columns["sex"] = ColumnSteps().with("encode=label", "test");
  const auto prep = TabularPreprocessor::fit(table.select(range(0, 353)), spec);
  EXPECT_EQ(prep.task(), "regression");
  const TabularData out = prep.transform(table);
  const at::Tensor expected = read_matrix(dir / "diabetes_expected.csv");  // (442, 10)
  EXPECT_TRUE(at::allclose(out.inputs.to(at::kDouble), expected, 1e-6, 1e-6));
  EXPECT_EQ(out.targets.scalar_type(), at::kFloat);
  EXPECT_FLOAT_EQ(out.targets[0].item<float>(), 151.0f);
}

TEST(Tabular, BreastCancerZScoreClippingThenStandardisation) {
  TempDir dir;
  lathe::testing::run_oracle("tabular_oracle.py", dir);
  const CsvTable table = read_csv(dir / "cancer.csv");
  TabularSpec spec;
  spec.target = "diagnosis";
  spec.all = ColumnSteps().with("outliers=zscore", "test").with("scale=standard", "test");
  const auto prep = TabularPreprocessor::fit(table.select(range(0, 455)), spec);
  EXPECT_EQ(prep.classes(), (std::vector<std::string>{"benign", "malignant"}));
  const at::Tensor expected = read_matrix(dir / "cancer_expected.csv");  // (569, 30)
  const at::Tensor ours = prep.transform(table).inputs.to(at::kDouble);
  EXPECT_TRUE(at::allclose(ours, expected, 1e-6, 1e-5))
      << (ours - expected).abs().max().item<double>();
}

TEST(Tabular, MissingValuesUnknownCategoriesAndErrors) {
  const CsvTable t = parse_csv("x,colour,y\n1,red,a\n,blue,b\n3,,a\n5,red,b\n", "small.csv");
  TabularSpec spec;
  spec.target = "y";
  expect_error<DataError>([&] { TabularPreprocessor::fit(t, spec); },
                          {"small.csv:3: column 'x' has a missing value", "impute"});
  spec.all.impute = "drop";
  const auto prep = TabularPreprocessor::fit(t, spec);
  const TabularData d = prep.transform(t);
  EXPECT_EQ(d.rows, (std::vector<int64_t>{0, 3}));  // rows with a hole are dropped
  EXPECT_EQ(prep.feature_names(), (std::vector<std::string>{"x", "colour=blue", "colour=red"}));
  // An unseen category is all zeros (one-hot) or -1 (label); an unseen class is an error.
  const CsvTable later = parse_csv("y,colour,x\na,green,2\n", "later.csv");
  EXPECT_TRUE(prep.transform(later).inputs.equal(at::tensor({2.0f, 0.0f, 0.0f}).view({1, 3})));
  expect_error<DataError>([&] { prep.transform(parse_csv("y,colour,x\nc,red,2\n", "new.csv")); },
                          {"new.csv:2: target 'c' is a class the training rows do not have"});
  expect_error<DataError>([&] { prep.transform(parse_csv("y,colour,x\na,red,two\n", "n.csv")); },
                          {"n.csv:2: column 'x' is numeric but holds 'two'"});
  expect_error<ConfigError>([&] { ColumnSteps().with("impute=avg", "run.yaml:7"); },
                            {"run.yaml:7: impute = 'avg' is not one of: none, drop, mean"});
  // Global steps apply to the columns they fit: mean and standard scaling to the numeric x,
  // most_frequent (and no scaling) to the categorical colour.
  spec.all.impute = "mean";
  spec.all.scale = "standard";
  spec.all.outliers = "iqr";
  const auto by_type = TabularPreprocessor::fit(t, spec);
  ASSERT_EQ(by_type.columns().size(), 2u);
  EXPECT_EQ(by_type.columns()[0].steps.impute, "mean");
  EXPECT_NEAR(by_type.columns()[0].fill_number, 3.0, 1e-12);  // mean of 1, 3, 5
  EXPECT_EQ(by_type.columns()[1].steps.impute, "most_frequent");
  EXPECT_EQ(by_type.columns()[1].fill_category, "red");
  EXPECT_EQ(by_type.columns()[1].steps.scale, "none");
  EXPECT_EQ(by_type.columns()[1].steps.outliers, "none");
  EXPECT_EQ(by_type.transform(t).inputs.size(0), 4);  // every hole filled
  // A column's own numeric step on a categorical column is still an error naming the key.
  spec.columns["colour"] = spec.all.with("impute=median", "run.yaml:12");
  expect_error<ConfigError>([&] { TabularPreprocessor::fit(t, spec); },
                            {"column 'colour' is categorical: impute = 'median'", "data.columns"});
  expect_error<DataError>([&] { TabularPreprocessor::from_json("{\"format\": \"x\"}", "p.json"); },
                          {"p.json: not a lathe tabular preprocessing file"});
}

TEST(Tabular, IrisStrataSplitEvenly) {
  const CsvTable iris =
      parse_csv(lathe::testing::read_text(
                    lathe::testing::source_dir() +
                    "/.venv/lib/python3.11/site-packages/sklearn/datasets/data/iris.csv"),
                "iris.csv");
  ASSERT_EQ(iris.num_rows(), 150);  // scikit-learn's first line, "150,4,setosa,...", is the header
  const at::Tensor strata = target_strata(iris, "virginica");  // the class column's "name"
  EXPECT_TRUE(at::bincount(strata).equal(at::full({3}, 50, at::kLong)));
  const SplitIndices s = split_indices(iris.num_rows(), 0.1, 0.1, 42, strata);
  EXPECT_TRUE(
      at::bincount(strata.index_select(0, at::tensor(s.test))).equal(at::full({3}, 5, at::kLong)));
}
