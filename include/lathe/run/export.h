// Exporting a finished run: its zoo model, its weights and the input signature it trained at
// (image side and channels, text length) → a validated ONNX file (+ a Triton repository).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lathe/onnx/export.h"

namespace lathe::run {

/// What `lathe export` takes besides the run.
struct RunExportOptions {
  std::filesystem::path output;  ///< the .onnx file; empty = <run>/model.onnx
  int64_t opset = 17;
  /// Dynamic symbols to keep: "batch", "seq" (sequence models), "height" and "width" (CNNs whose
  /// forward takes any image size: ResNet, MobileNetV2); others are fixed at the run's sizes.
  std::vector<std::string> dynamic{"batch", "seq"};
  bool fp16 = false;
  /// Also write a Triton model repository at <output's folder>/triton/<model name>/.
  bool triton = false;
  /// Weights to export instead of the run's model.safetensors (.safetensors / .pt).
  std::filesystem::path weights;
  /// Put the run's preprocessing in the graph (`--preprocess`): image runs take uint8 pixels
  /// [batch, H, W, C] at the run's side (resizing and cropping stay outside) and normalise them
  /// inside; csv runs take one input per raw column (float [batch, 1], NaN for a missing cell;
  /// string [batch, 1] for categories) through the fitted imputation, clipping, scaling and
  /// encoding; classification adds the outputs `label` (class name) and `probabilities`. Text
  /// runs are a ConfigError (ONNX has no tokenizer operator).
  bool preprocess = false;
  /// Int8 (lathe/onnx/quantize.h): automatic = static QDQ for models with convolutions, calibrated
  /// on the run's training batches; dynamic otherwise.
  onnx::Int8Mode int8 = onnx::Int8Mode::none;
  /// Static int8: how many training batches (of data.batch_size) to calibrate on.
  int64_t calibration_batches = 8;
};

/// Exports a finished run (runs/<name>: config.yaml + model.safetensors) or one of its checkpoint
/// folders (model.safetensors + state.json holding the config). The input signature is the
/// run's: images at the side and channels it trained at (data.image_size of the resolved
/// config), token ids at its text length (data.seq_len / data.max_length); never a model
/// default. The zoo model's signature names the inputs and outputs; metadata_props carry the
/// model name, the run config, the image normalisation and the tabular preprocessing (with class
/// names) when the run has them. A --dynamic axis the model cannot take is a ConfigError.
/// A run of a model a library fits (xgboost, random_forest, svm) exports its model file
/// (model.json, model.libsvm) as ai.onnx.ml operators instead (lathe/onnx/estimators.h), with
/// a dynamic batch; --fp16 / --int8 are ConfigErrors for it.
///
///   lathe::run::export_run("runs/fashion_cnn", {.output = "fashion.onnx"});
onnx::ExportReport export_run(const std::filesystem::path& run_or_checkpoint,
                              const RunExportOptions& options);

/// What export_hf wrote.
struct HfExport {
  std::filesystem::path folder;
  std::vector<std::string> files;  ///< the file names written, in order
};

/// Writes a finished language-model run (llama or gpt2; a LoRA run's merged weights) as a Hugging
/// Face folder that transformers' AutoModelForCausalLM.from_pretrained loads: config.json (the
/// run's model options over the config.json it was fine-tuned from, if any), model.safetensors
/// (transformers' names; a tied lm_head left out, as save_pretrained does), generation_config.json
/// (the run's, else the pretrained folder's, else one from config.json's token ids) and the
/// tokenizer files the run or its pretrained folder has (tokenizer.json, tokenizer_config.json,
/// special_tokens_map.json, vocab.json, merges.txt, tokenizer.model, vocab.txt,
/// chat_template.jinja). `weights`: instead of RUN/model.safetensors.
///
///   lathe::run::export_hf("runs/smol_lora", "export/smol_lora");
HfExport export_hf(const std::filesystem::path& run_dir, const std::filesystem::path& folder,
                   const std::filesystem::path& weights = {});

}  // namespace lathe::run
