// The registry: one explicit list of zoo entries (no static registrars the linker could drop),
// and the models a user registers at run time.
#include "models/registry.h"

#include <deque>
#include <mutex>

#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "models/cnn/convnet.h"
#include "models/cnn/mobilenet.h"
#include "models/cnn/resnet.h"
#include "models/rnn/rnn.h"
#include "models/tabular/svm.h"
#include "models/tabular/tabular.h"
#include "models/tabular/xgboost.h"
#include "models/transformer/bert.h"
#include "models/transformer/gpt2.h"
#include "models/transformer/llama.h"
#include "models/transformer/vit.h"

namespace lathe::models {
namespace {

torch::nn::AnyModule build_convnet(const config::Params& p) {
  ConvNetOptions o;
  o.in_channels(p.get_int("in_channels", o.in_channels()))
      .num_classes(p.get_int("num_classes", o.num_classes()))
      .image_size(p.get_int("image_size", o.image_size()))
      .channels(p.get_int_list("channels", o.channels()))
      .hidden(p.get_int("hidden", o.hidden()))
      .dropout(p.get_double("dropout", o.dropout()));
  p.check_all_used();
  return torch::nn::AnyModule(ConvNet(o));
}

/// resnetN: torchvision's ResNet of that depth; `layers` may override the blocks per stage.
std::function<torch::nn::AnyModule(const config::Params&)> build_resnet(int64_t depth) {
  return [depth](const config::Params& p) {
    ResNetOptions o;
    o.depth(depth)
        .layers(p.get_int_list("layers", o.layers()))
        .num_classes(p.get_int("num_classes", o.num_classes()))
        .in_channels(p.get_int("in_channels", o.in_channels()))
        .small_input(p.get_bool("small_input", o.small_input()))
        .width_per_group(p.get_int("width_per_group", o.width_per_group()))
        .zero_init_residual(p.get_bool("zero_init_residual", o.zero_init_residual()))
        .gradient_checkpointing(p.get_bool("gradient_checkpointing", o.gradient_checkpointing()));
    p.check_all_used();
    return torch::nn::AnyModule(ResNet(o));
  };
}

torch::nn::AnyModule build_mobilenet_v2(const config::Params& p) {
  MobileNetV2Options o;
  o.num_classes(p.get_int("num_classes", o.num_classes()))
      .in_channels(p.get_int("in_channels", o.in_channels()))
      .width_mult(p.get_double("width_mult", o.width_mult()))
      .round_nearest(p.get_int("round_nearest", o.round_nearest()))
      .dropout(p.get_double("dropout", o.dropout()));
  p.check_all_used();
  return torch::nn::AnyModule(MobileNetV2(o));
}

/// lstm_classifier / gru_classifier: RNNClassifier with that cell.
std::function<torch::nn::AnyModule(const config::Params&)> build_rnn_classifier(std::string cell) {
  return [cell](const config::Params& p) {
    RNNClassifierOptions o;
    o.cell(cell)
        .vocab_size(p.get_int("vocab_size", o.vocab_size()))
        .embedding_dim(p.get_int("embedding_dim", o.embedding_dim()))
        .input_size(p.get_int("input_size", o.input_size()))
        .hidden_size(p.get_int("hidden_size", o.hidden_size()))
        .num_layers(p.get_int("num_layers", o.num_layers()))
        .bidirectional(p.get_bool("bidirectional", o.bidirectional()))
        .dropout(p.get_double("dropout", o.dropout()))
        .num_classes(p.get_int("num_classes", o.num_classes()))
        .pad_id(p.get_int("pad_id", o.pad_id()));
    p.check_all_used();
    return torch::nn::AnyModule(RNNClassifier(o));
  };
}

/// lstm_lm / gru_lm: RNNLanguageModel with that cell.
std::function<torch::nn::AnyModule(const config::Params&)> build_rnn_lm(std::string cell) {
  return [cell](const config::Params& p) {
    RNNLanguageModelOptions o;
    o.cell(cell)
        .vocab_size(p.get_int("vocab_size", o.vocab_size()))
        .embedding_dim(p.get_int("embedding_dim", o.embedding_dim()))
        .hidden_size(p.get_int("hidden_size", o.hidden_size()))
        .num_layers(p.get_int("num_layers", o.num_layers()))
        .dropout(p.get_double("dropout", o.dropout()))
        .tie_weights(p.get_bool("tie_weights", o.tie_weights()));
    p.check_all_used();
    return torch::nn::AnyModule(RNNLanguageModel(o));
  };
}

torch::nn::AnyModule build_gpt2(const config::Params& p) {
  GPT2Options o;
  o.vocab_size(p.get_int("vocab_size", o.vocab_size()))
      .n_positions(p.get_int("n_positions", o.n_positions()))
      .n_embd(p.get_int("n_embd", o.n_embd()))
      .n_layer(p.get_int("n_layer", o.n_layer()))
      .n_head(p.get_int("n_head", o.n_head()))
      .n_inner(p.get_int("n_inner", o.n_inner()))
      .layer_norm_epsilon(p.get_double("layer_norm_epsilon", o.layer_norm_epsilon()))
      .dropout(p.get_double("dropout", o.dropout()))
      .tie_word_embeddings(p.get_bool("tie_word_embeddings", o.tie_word_embeddings()))
      .gradient_checkpointing(p.get_bool("gradient_checkpointing", o.gradient_checkpointing()));
  p.check_all_used();
  return torch::nn::AnyModule(GPT2(o));
}

torch::nn::AnyModule build_llama(const config::Params& p) {
  LlamaOptions o;
  o.vocab_size(p.get_int("vocab_size", o.vocab_size()))
      .hidden_size(p.get_int("hidden_size", o.hidden_size()))
      .intermediate_size(p.get_int("intermediate_size", o.intermediate_size()))
      .num_hidden_layers(p.get_int("num_hidden_layers", o.num_hidden_layers()))
      .num_attention_heads(p.get_int("num_attention_heads", o.num_attention_heads()))
      .num_key_value_heads(p.get_int("num_key_value_heads", o.num_key_value_heads()))
      .head_dim(p.get_int("head_dim", o.head_dim()))
      .max_position_embeddings(p.get_int("max_position_embeddings", o.max_position_embeddings()))
      .rms_norm_eps(p.get_double("rms_norm_eps", o.rms_norm_eps()))
      .rope_theta(p.get_double("rope_theta", o.rope_theta()))
      .rope_scaling(p.get_string("rope_scaling", o.rope_scaling()))
      .rope_factor(p.get_double("rope_factor", o.rope_factor()))
      .rope_low_freq_factor(p.get_double("rope_low_freq_factor", o.rope_low_freq_factor()))
      .rope_high_freq_factor(p.get_double("rope_high_freq_factor", o.rope_high_freq_factor()))
      .rope_original_max_position_embeddings(p.get_int(
          "rope_original_max_position_embeddings", o.rope_original_max_position_embeddings()))
      .attention_bias(p.get_bool("attention_bias", o.attention_bias()))
      .qkv_bias(p.get_bool("qkv_bias", o.qkv_bias()))
      .mlp_bias(p.get_bool("mlp_bias", o.mlp_bias()))
      .sliding_window(p.get_int("sliding_window", o.sliding_window()))
      .max_window_layers(p.get_int("max_window_layers", o.max_window_layers()))
      .attention_dropout(p.get_double("attention_dropout", o.attention_dropout()))
      .tie_word_embeddings(p.get_bool("tie_word_embeddings", o.tie_word_embeddings()))
      .pad_token_id(p.get_int("pad_token_id", o.pad_token_id()))
      .initializer_range(p.get_double("initializer_range", o.initializer_range()))
      .gradient_checkpointing(p.get_bool("gradient_checkpointing", o.gradient_checkpointing()));
  p.check_all_used();
  return torch::nn::AnyModule(Llama(o));
}

/// The encoder's options (BertConfig's names), shared by bert and bert_classifier.
BertOptions bert_options(const config::Params& p) {
  BertOptions b;
  b.vocab_size(p.get_int("vocab_size", b.vocab_size()))
      .hidden_size(p.get_int("hidden_size", b.hidden_size()))
      .num_hidden_layers(p.get_int("num_hidden_layers", b.num_hidden_layers()))
      .num_attention_heads(p.get_int("num_attention_heads", b.num_attention_heads()))
      .intermediate_size(p.get_int("intermediate_size", b.intermediate_size()))
      .max_position_embeddings(p.get_int("max_position_embeddings", b.max_position_embeddings()))
      .type_vocab_size(p.get_int("type_vocab_size", b.type_vocab_size()))
      .layer_norm_eps(p.get_double("layer_norm_eps", b.layer_norm_eps()))
      .hidden_dropout_prob(p.get_double("hidden_dropout_prob", b.hidden_dropout_prob()))
      .attention_probs_dropout_prob(
          p.get_double("attention_probs_dropout_prob", b.attention_probs_dropout_prob()))
      .pad_token_id(p.get_int("pad_token_id", b.pad_token_id()))
      .gradient_checkpointing(p.get_bool("gradient_checkpointing", b.gradient_checkpointing()));
  return b;
}

torch::nn::AnyModule build_bert(const config::Params& p) {
  BertOptions b = bert_options(p);
  b.add_pooling_layer(p.get_bool("add_pooling_layer", b.add_pooling_layer()));
  p.check_all_used();
  return torch::nn::AnyModule(Bert(b));
}

torch::nn::AnyModule build_bert_classifier(const config::Params& p) {
  BertClassifierOptions o;
  o.bert(bert_options(p))
      .num_labels(p.get_int("num_labels", o.num_labels()))
      .classifier_dropout(p.get_double("classifier_dropout", o.classifier_dropout()));
  p.check_all_used();
  return torch::nn::AnyModule(BertClassifier(o));
}

torch::nn::AnyModule build_vit(const config::Params& p) {
  ViTOptions o;
  o.image_size(p.get_int("image_size", o.image_size()))
      .patch_size(p.get_int("patch_size", o.patch_size()))
      .in_channels(p.get_int("in_channels", o.in_channels()))
      .num_layers(p.get_int("num_layers", o.num_layers()))
      .num_heads(p.get_int("num_heads", o.num_heads()))
      .hidden_dim(p.get_int("hidden_dim", o.hidden_dim()))
      .mlp_dim(p.get_int("mlp_dim", o.mlp_dim()))
      .dropout(p.get_double("dropout", o.dropout()))
      .attention_dropout(p.get_double("attention_dropout", o.attention_dropout()))
      .num_classes(p.get_int("num_classes", o.num_classes()))
      .gradient_checkpointing(p.get_bool("gradient_checkpointing", o.gradient_checkpointing()));
  p.check_all_used();
  return torch::nn::AnyModule(ViT(o));
}

torch::nn::AnyModule build_mlp(const config::Params& p) {
  MLPOptions o;
  o.in_features(p.get_int("in_features", o.in_features()))
      .hidden(p.get_int_list("hidden", o.hidden()))
      .out_features(p.get_int("out_features", o.out_features()))
      .activation(p.get_string("activation", o.activation()))
      .dropout(p.get_double("dropout", o.dropout()))
      .batch_norm(p.get_bool("batch_norm", o.batch_norm()));
  p.check_all_used();
  return torch::nn::AnyModule(MLP(o));
}

/// linear_regression / logistic_regression / lasso / ridge: LinearModel with these defaults.
std::function<torch::nn::AnyModule(const config::Params&)> build_linear(int64_t out, double l1,
                                                                        double l2) {
  return [=](const config::Params& p) {
    LinearModelOptions o;
    o.in_features(p.get_int("in_features", o.in_features()))
        .out_features(p.get_int("out_features", out))
        .l1(p.get_double("l1", l1))
        .l2(p.get_double("l2", l2))
        .bias(p.get_bool("bias", o.bias()));
    p.check_all_used();
    return torch::nn::AnyModule(LinearModel(o));
  };
}

/// xgboost (gradient boosting) and random_forest (XGBoost's random-forest mode: one round of
/// n_estimators parallel trees on row and column samples, as XGBRFClassifier / XGBRFRegressor).
std::function<std::shared_ptr<Estimator>(const config::Params&)> build_xgboost(bool forest) {
  return [forest](const config::Params& p) -> std::shared_ptr<Estimator> {
    XGBoostOptions o;
    if (forest)  // XGBRF's defaults, deeper trees as a forest's
      o.mode("forest").max_depth(8).subsample(0.8).colsample_bynode(0.8).reg_lambda(1e-5);
    o.n_estimators(p.get_int("n_estimators", o.n_estimators()))
        .max_depth(p.get_int("max_depth", o.max_depth()))
        .min_child_weight(p.get_double("min_child_weight", o.min_child_weight()))
        .subsample(p.get_double("subsample", o.subsample()))
        .colsample_bytree(p.get_double("colsample_bytree", o.colsample_bytree()))
        .colsample_bynode(p.get_double("colsample_bynode", o.colsample_bynode()))
        .reg_lambda(p.get_double("reg_lambda", o.reg_lambda()))
        .reg_alpha(p.get_double("reg_alpha", o.reg_alpha()))
        .gamma(p.get_double("gamma", o.gamma()))
        .max_bin(p.get_int("max_bin", o.max_bin()))
        .tree_method(p.get_string("tree_method", o.tree_method()))
        .device(p.get_string("device", o.device()));
    if (!forest) o.learning_rate(p.get_double("learning_rate", o.learning_rate()));
    p.check_all_used();
    return std::make_shared<XGBoostEstimator>(o);
  };
}

std::shared_ptr<Estimator> build_svm(const config::Params& p) {
  SvmOptions o;
  o.kernel(p.get_string("kernel", o.kernel()))
      .C(p.get_double("C", o.C()))
      .gamma(p.get_string("gamma", o.gamma()))
      .degree(p.get_int("degree", o.degree()))
      .coef0(p.get_double("coef0", o.coef0()))
      .epsilon(p.get_double("epsilon", o.epsilon()))
      .tol(p.get_double("tol", o.tol()))
      .shrinking(p.get_bool("shrinking", o.shrinking()))
      .cache_size(p.get_double("cache_size", o.cache_size()));
  p.check_all_used();
  return std::make_shared<SvmEstimator>(o);
}

}  // namespace

const std::vector<ModelSpec>& model_specs() {
  constexpr auto C = DataSize::in_channels, S = DataSize::image_size, K = DataSize::classes,
                 V = DataSize::vocab_size;
  constexpr bool kCheckpointing = true;  // model.gradient_checkpointing is an option
  const std::vector<SizeOption> cnn = {{"num_classes", K}, {"in_channels", C}};
  const std::vector<SizeOption> table = {{"in_features", DataSize::in_features},
                                         {"out_features", DataSize::outputs}};
  static const std::vector<ModelSpec> specs = {
      {"convnet", "small CNN for 28x28/32x32 images (conv-BN-ReLU-pool stages, MLP head)",
       {{"in_channels", C}, {"num_classes", K}, {"image_size", S}}, build_convnet},
      {"resnet18", "torchvision ResNet-18 (basic blocks [2,2,2,2]); small_input=true for 32x32",
       cnn, build_resnet(18), kCheckpointing},
      {"resnet34", "torchvision ResNet-34 (basic blocks [3,4,6,3])",
       cnn, build_resnet(34), kCheckpointing},
      {"resnet50", "torchvision ResNet-50 (bottlenecks [3,4,6,3])",
       cnn, build_resnet(50), kCheckpointing},
      {"resnet101", "torchvision ResNet-101 (bottlenecks [3,4,23,3])",
       cnn, build_resnet(101), kCheckpointing},
      {"resnet152", "torchvision ResNet-152 (bottlenecks [3,8,36,3])",
       cnn, build_resnet(152), kCheckpointing},
      {"mobilenet_v2", "torchvision MobileNetV2 (inverted residuals, width_mult)", cnn,
       build_mobilenet_v2},
      {"lstm_classifier", "[embedding ->] LSTM (uni/bi, stacked, batch-first) -> last state -> fc",
       {{"vocab_size", V}, {"num_classes", K}}, build_rnn_classifier("lstm")},
      {"gru_classifier", "[embedding ->] GRU (uni/bi, stacked, batch-first) -> last state -> fc",
       {{"vocab_size", V}, {"num_classes", K}}, build_rnn_classifier("gru")},
      {"lstm_lm", "token/char language model: embedding -> LSTM -> fc over the vocabulary",
       {{"vocab_size", V}}, build_rnn_lm("lstm")},
      {"gru_lm", "token/char language model: embedding -> GRU -> fc over the vocabulary",
       {{"vocab_size", V}}, build_rnn_lm("gru")},
      {"gpt2", "Hugging Face GPT2LMHeadModel (decoder LM, Conv1D [in, out], tied lm_head)",
       {{"vocab_size", V}}, build_gpt2, kCheckpointing},
      {"llama", "Hugging Face LlamaForCausalLM / Qwen2 / Mistral (RMSNorm, RoPE, SwiGLU, GQA)",
       {{"vocab_size", V}}, build_llama, kCheckpointing},
      {"bert_classifier", "Hugging Face BertForSequenceClassification (mask from pad_token_id)",
       {{"vocab_size", V}, {"num_labels", K}}, build_bert_classifier, kCheckpointing},
      {"bert", "Hugging Face BertModel encoder: token ids -> hidden states (B, T, hidden_size)",
       {{"vocab_size", V}}, build_bert, kCheckpointing},
      {"vit", "torchvision VisionTransformer (vit_b_16 by default; image_size, patch_size, ...)",
       {{"in_channels", C}, {"num_classes", K}, {"image_size", S}}, build_vit, kCheckpointing},
      {"mlp", "multilayer perceptron for tabular data (hidden widths, activation, BN, dropout)",
       table, build_mlp},
      {"linear_regression", "y = xW^T + b (MSE loss); l1 / l2 penalties optional", table,
       build_linear(1, 0.0, 0.0)},
      {"logistic_regression", "linear logits for cross-entropy; l1 / l2 penalties optional", table,
       build_linear(2, 0.0, 0.0)},
      {"lasso", "linear regression with an L1 penalty (l1 = 1e-3 unless set)", table,
       build_linear(1, 1e-3, 0.0)},
      {"ridge", "linear regression with an L2 penalty (l2 = 1e-3 unless set)", table,
       build_linear(1, 0.0, 1e-3)},
      {"xgboost", "gradient-boosted trees (XGBoost): rounds, learning rate, depth, subsampling",
       {}, {}, false, build_xgboost(false)},
      {"random_forest", "random forest (XGBoost's random-forest mode): trees, depth, sampling",
       {}, {}, false, build_xgboost(true)},
      {"svm", "support-vector machine (LIBSVM): SVC / SVR, linear, poly, rbf, sigmoid kernels",
       {}, {}, false, build_svm},
  };
  return specs;
}

namespace {

/// The user's models: a deque, so references model_spec() returned stay valid as others join.
struct UserModels {
  std::mutex mutex;
  std::deque<ModelSpec> specs;
  std::deque<SignatureFn> signatures;  ///< one per spec, maybe empty
};

UserModels& user_models() {
  static UserModels models;
  return models;
}

/// The registered spec named `name` and its signature function; null when there is none.
std::pair<const ModelSpec*, const SignatureFn*> find_user_model(const std::string& name) {
  UserModels& users = user_models();
  std::lock_guard lock(users.mutex);
  for (size_t i = 0; i < users.specs.size(); ++i)
    if (users.specs[i].name == name) return {&users.specs[i], &users.signatures[i]};
  return {nullptr, nullptr};
}

}  // namespace

void register_model(ModelSpec spec, SignatureFn signature) {
  LATHE_CHECK(!spec.name.empty() && static_cast<bool>(spec.build), ConfigError,
              "register_model: a model needs a name and a build function (got name '{}'{})",
              spec.name, spec.build ? "" : ", no build function");
  for (const auto& zoo : model_specs())
    LATHE_CHECK(zoo.name != spec.name, ConfigError,
                "register_model: '{}' is a zoo model already; register yours under another name",
                spec.name);
  LATHE_CHECK(find_user_model(spec.name).first == nullptr, ConfigError,
              "register_model: a model named '{}' is registered already", spec.name);
  UserModels& users = user_models();
  std::lock_guard lock(users.mutex);
  users.specs.push_back(std::move(spec));
  users.signatures.push_back(std::move(signature));
}

std::vector<std::string> registered_models() {
  UserModels& users = user_models();
  std::lock_guard lock(users.mutex);
  std::vector<std::string> names;
  for (const auto& spec : users.specs) names.push_back(spec.name);
  return names;
}

const ModelSpec& model_spec(const config::ModelSection& model) {
  const std::string& name = model.name;
  std::vector<std::string> names;
  for (const auto& spec : model_specs()) {
    if (spec.name == name) return spec;
    names.push_back(spec.name);
  }
  if (const ModelSpec* user = find_user_model(name).first) return *user;
  const std::vector<std::string> users = registered_models();
  const std::vector<std::string> zoo = names;
  names.insert(names.end(), users.begin(), users.end());
  const std::string hint = config::closest_key(name, names);
  throw ConfigError(fmt::format(
      "{}: model.name: unknown model '{}'{}; the zoo has: {}{}", model.name_where, name,
      hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint), fmt::join(zoo, ", "),
      users.empty() ? "" : fmt::format("; registered: {}", fmt::join(users, ", "))));
}

namespace {

bool is_auto(const config::ParamValue& v) {
  return !v.is_list && v.items.size() == 1 && v.items.front() == "auto";
}

/// The data's value for a size (0 when the data does not know it) and how to say it.
std::pair<int64_t, std::string> data_size(DataSize from, const config::DataInfo& d) {
  switch (from) {
    case DataSize::in_channels:
      return {d.channels, fmt::format("images with {} channel{}", d.channels,
                                      d.channels == 1 ? "" : "s")};
    case DataSize::image_size:
      return {d.side, fmt::format("{}x{} images (data.image_size)", d.side, d.side)};
    case DataSize::in_features: {
      std::vector<std::string> names(
          d.feature_names.begin(),
          d.feature_names.begin() + static_cast<long>(std::min<size_t>(6, d.feature_names.size())));
      if (d.feature_names.size() > 6) names.push_back("...");
      return {d.num_features, fmt::format("{} features after preprocessing ({})", d.num_features,
                                          fmt::join(names, ", "))};
    }
    case DataSize::classes:
      return {d.task == "classification" ? static_cast<int64_t>(d.classes.size()) : 0,
              d.classes_text()};
    case DataSize::outputs:
      if (d.task == "regression") return {1, "1 regression target"};
      return {d.task == "classification" ? static_cast<int64_t>(d.classes.size()) : 0,
              d.classes_text()};
    case DataSize::vocab_size:
      return {d.vocab_size,
              fmt::format("a vocabulary of {} ids ({})", d.vocab_size,
                          !d.tokenizer.empty()  ? "data.tokenizer " + d.tokenizer
                          : d.source == "text" ? std::string("byte-level text")
                                               : std::string("data.vocab"))};
  }
  return {0, ""};
}

}  // namespace

std::vector<std::string> resolve_sizes(config::ModelSection& model, const config::DataInfo& data) {
  const ModelSpec& spec = model_spec(model);
  std::vector<std::string> lines;
  for (const SizeOption& opt : spec.sizes) {
    const auto [value, says] = data_size(opt.from, data);
    const auto& values = model.params.values();
    const auto it = values.find(opt.key);
    const bool given = it != values.end() && !is_auto(it->second);
    if (value <= 0) {  // the data does not know it: the given value or the model's default
      LATHE_CHECK(given || it == values.end(), ConfigError,
                  "{}: model.{} = auto, but the data (source {}) does not say it; set a number",
                  it != values.end() ? it->second.where : model.name_where, opt.key, data.source);
      continue;
    }
    if (given) {
      const int64_t stated = config::parse_int(it->second.items.front(), it->second.where,
                                               "model." + opt.key);
      // A Hugging Face config.json's vocabulary may be larger than the tokenizer's ids (padded
      // embeddings): the data's ids must fit in it.
      if (opt.from == DataSize::vocab_size && it->second.where.ends_with("config.json")) {
        LATHE_CHECK(value <= stated, ConfigError,
                    "{}: vocab_size = {}, but the data has {}; the data's tokenizer does not "
                    "belong to this model",
                    it->second.where, stated, says);
        lines.push_back(fmt::format("{} = {} (config.json; the data's {} ids fit)", opt.key,
                                    stated, value));
        continue;
      }
      LATHE_CHECK(stated == value, ConfigError,
                  "{}: model.{} = {}, but the data has {}; remove the key (it defaults to auto) "
                  "or make it {}",
                  it->second.where, opt.key, stated, says, value);
      lines.push_back(fmt::format("{} = {} (given, agrees with the data)", opt.key, value));
      continue;
    }
    model.params.set(opt.key, config::ParamValue{{std::to_string(value)}, false,
                                                 fmt::format("from the data ({})", data.path)});
    lines.push_back(fmt::format("{} = {} (from the data: {})", opt.key, value, says));
  }
  return lines;
}

torch::nn::AnyModule build_model(const config::ModelSection& model) {
  const ModelSpec& spec = model_spec(model);
  config::Params params = model.params;
  if (params.has("gradient_checkpointing") && !spec.gradient_checkpointing) {
    std::vector<std::string> have;
    for (const auto& s : model_specs())
      if (s.gradient_checkpointing) have.push_back(s.name);
    throw ConfigError(fmt::format(
        "{}: model.gradient_checkpointing: model '{}' has no activation checkpointing; remove "
        "the key (models that have it: {})",
        params.values().at("gradient_checkpointing").where, spec.name, fmt::join(have, ", ")));
  }
  for (const SizeOption& opt : spec.sizes)  // still auto: no data said it, the defaults apply
    if (params.has(opt.key) && is_auto(params.values().at(opt.key))) params.erase(opt.key);
  if (spec.estimator) return torch::nn::AnyModule(EstimatorModule(spec.estimator(params)));
  return spec.build(params);
}

std::shared_ptr<Estimator> make_estimator(const config::ModelSection& model) {
  const ModelSpec& spec = model_spec(model);
  if (!spec.estimator) return nullptr;
  return spec.estimator(model.params);
}

ModelSignature model_signature(const config::ModelSection& model, const torch::nn::Module& module,
                               const SignatureSizes& sizes) {
  const auto [user, signature] = find_user_model(model.name);
  if (user == nullptr) return model_signature(module, sizes);
  LATHE_CHECK(static_cast<bool>(*signature), ExportError,
              "model '{}' was registered without a signature: pass register_model a second "
              "argument that gives its inputs (names, example shapes, dynamic axes) to export it",
              model.name);
  return (*signature)(module, sizes);
}

std::vector<std::shared_ptr<torch::nn::Module>> channels_last_parts_on_cpu(
    torch::nn::Module& module) {
  if (auto* convnet = dynamic_cast<ConvNetImpl*>(&module)) return {convnet->shared_from_this()};
  if (auto* resnet = dynamic_cast<ResNetImpl*>(&module); resnet && resnet->options.depth() <= 34)
    return {resnet->conv1.ptr(), resnet->bn1.ptr(), resnet->layer1.ptr(), resnet->layer2.ptr()};
  return {};
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace lathe::models
