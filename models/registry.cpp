// The registry: one explicit list of zoo entries (no static registrars the linker could drop).
#include "models/registry.h"

#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "models/cnn/convnet.h"
#include "models/cnn/mobilenet.h"
#include "models/cnn/resnet.h"
#include "models/rnn/rnn.h"
#include "models/tabular/tabular.h"
#include "models/transformer/bert.h"
#include "models/transformer/gpt2.h"
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
        .zero_init_residual(p.get_bool("zero_init_residual", o.zero_init_residual()));
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
      .pad_token_id(p.get_int("pad_token_id", b.pad_token_id()));
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
      .num_classes(p.get_int("num_classes", o.num_classes()));
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

}  // namespace

const std::vector<ModelSpec>& model_specs() {
  static const std::vector<ModelSpec> specs = {
      {"convnet", "small CNN for 28x28/32x32 images (conv-BN-ReLU-pool stages, MLP head)",
       build_convnet},
      {"resnet18", "torchvision ResNet-18 (basic blocks [2,2,2,2]); small_input=true for 32x32",
       build_resnet(18)},
      {"resnet34", "torchvision ResNet-34 (basic blocks [3,4,6,3])", build_resnet(34)},
      {"resnet50", "torchvision ResNet-50 (bottlenecks [3,4,6,3])", build_resnet(50)},
      {"resnet101", "torchvision ResNet-101 (bottlenecks [3,4,23,3])", build_resnet(101)},
      {"resnet152", "torchvision ResNet-152 (bottlenecks [3,8,36,3])", build_resnet(152)},
      {"mobilenet_v2", "torchvision MobileNetV2 (inverted residuals, width_mult)",
       build_mobilenet_v2},
      {"lstm_classifier", "[embedding ->] LSTM (uni/bi, stacked, batch-first) -> last state -> fc",
       build_rnn_classifier("lstm")},
      {"gru_classifier", "[embedding ->] GRU (uni/bi, stacked, batch-first) -> last state -> fc",
       build_rnn_classifier("gru")},
      {"lstm_lm", "token/char language model: embedding -> LSTM -> fc over the vocabulary",
       build_rnn_lm("lstm")},
      {"gru_lm", "token/char language model: embedding -> GRU -> fc over the vocabulary",
       build_rnn_lm("gru")},
      {"gpt2", "Hugging Face GPT2LMHeadModel (decoder LM, Conv1D [in, out], tied lm_head)",
       build_gpt2},
      {"bert_classifier", "Hugging Face BertForSequenceClassification (mask from pad_token_id)",
       build_bert_classifier},
      {"bert", "Hugging Face BertModel encoder: token ids -> hidden states (B, T, hidden_size)",
       build_bert},
      {"vit", "torchvision VisionTransformer (vit_b_16 by default; image_size, patch_size, ...)",
       build_vit},
      {"mlp", "multilayer perceptron for tabular data (hidden widths, activation, BN, dropout)",
       build_mlp},
      {"linear_regression", "y = xW^T + b (MSE loss); l1 / l2 penalties optional",
       build_linear(1, 0.0, 0.0)},
      {"logistic_regression", "linear logits for cross-entropy; l1 / l2 penalties optional",
       build_linear(2, 0.0, 0.0)},
      {"lasso", "linear regression with an L1 penalty (l1 = 1e-3 unless set)",
       build_linear(1, 1e-3, 0.0)},
      {"ridge", "linear regression with an L2 penalty (l2 = 1e-3 unless set)",
       build_linear(1, 0.0, 1e-3)},
  };
  return specs;
}

torch::nn::AnyModule build_model(const config::ModelSection& model) {
  const std::string& name = model.name;
  std::vector<std::string> names;
  for (const auto& spec : model_specs()) {
    if (spec.name == name) return spec.build(model.params);
    names.push_back(spec.name);
  }
  const std::string hint = config::closest_key(name, names);
  throw ConfigError(fmt::format(
      "{}: model.name: unknown model '{}'{}; the zoo has: {}", model.name_where, name,
      hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint), fmt::join(names, ", ")));
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace lathe::models
