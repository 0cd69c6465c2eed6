// The typed run config: YAML file + dotted key=value overrides → validated structs, and back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/config/names.h"
#include "lathe/config/params.h"

namespace lathe::config {

/// run: where the run's files go, the seed, the device and threads.
struct RunSection {
  std::string name = "run";        ///< the run folder is <dir>/<name>
  std::string dir = "runs";        ///< the folder that holds run folders
  uint64_t seed = 42;              ///< drives every RNG (weights, shuffling, splits, dropout)
  std::string device = "auto";     ///< auto | cpu | cuda | cuda:N
  int threads = 0;                 ///< intra-op threads; 0 = one per core
  bool deterministic = false;      ///< deterministic algorithms (bit-identical reruns on CPU)
};

/// data: the source and how it is split, preprocessed and batched.
struct DataSection {
  /// idx | csv | image_folder | text | text_csv (config/names.h: the keys each one honours; a
  /// key set for a source that does not use it is a ConfigError)
  std::string source = "idx";
  std::string path;                ///< the source's folder or file (required)
  std::string test_path;           ///< a separate test file/folder (csv, text_csv); empty = split off
  double val_fraction = 0.1;       ///< part of the training set held out for validation
  double test_fraction = 0.1;      ///< part held out for test when the source has no test set
  int64_t batch_size = 128;        ///< training batch (the global batch across data-parallel ranks)
  int64_t eval_batch_size = 1000;  ///< validation and test batch
  int64_t limit_train = 0;         ///< use only the first N training records (0 = all)
  int64_t limit_test = 0;          ///< use only the first N test records (0 = all)
  std::vector<int64_t> classes;    ///< keep only these class ids, relabelled 0..k-1 in this order
  std::vector<double> mean;        ///< per-channel normalisation; empty = computed on train
  std::vector<double> std;         ///< per-channel standard deviation; empty = computed on train
  int num_workers = -1;            ///< loader threads; -1 = half the cores (at least 1)
  bool skip_bad_records = false;   ///< skip malformed CSV rows / unreadable images (counted) instead of failing
  // csv and text_csv
  std::string target;              ///< the target (label) column
  std::string task = "auto";       ///< auto | classification | regression; one answer with task.kind
  std::string impute = "none";     ///< every column: none | drop | mean | median | most_frequent | constant
  std::string outliers = "none";   ///< every numeric column: none | zscore | iqr
  std::string scale = "standard";  ///< every numeric column: none | standard | minmax
  std::string encode = "onehot";   ///< every categorical column: onehot | label
  Params columns{"data.columns"};  ///< per column: name: [impute=median, scale=minmax, ...]
  // images
  int64_t image_size = 0;          ///< train/eval size (square); 0 = as stored (idx) / 224 (folders);
                                   ///< the resolved config holds the size used
  int64_t max_image_pixels = 89'478'485;  ///< image_folder: larger images are errors (PIL's bomb limit)
  std::vector<std::string> augment;  ///< train only: random_crop[:pad], hflip, random_resized_crop
  // text
  int64_t seq_len = 128;           ///< text: window length in bytes
  std::string tokenizer;  ///< text: a tokenizer.json or Hugging Face folder; empty = bytes
  std::string vocab;               ///< text_csv: a BERT vocab.txt
  int64_t max_length = 128;        ///< text_csv: tokens per record ([CLS] ... [SEP] [PAD]...)
  std::string text_column = "text";  ///< text_csv: the column holding the text
  std::string invalid_utf8 = "error";  ///< text_csv: error | replace (drop bad bytes, as HF does)
};

/// model.lora: LoRA adapters (peft's LoraConfig names; models/lora.h). Only the adapters and the
/// `model.head` layers train; the run writes merged weights (model.safetensors) and the adapter
/// as peft saves it (adapter_model.safetensors + adapter_config.json).
struct LoraSection {
  std::vector<std::string> targets;  ///< module names: a path equal to one or ending in ".NAME"
  std::string target_regex;          ///< or one regular expression a whole module path matches
  int64_t rank = 0;                  ///< r; 0 = auto: the adapter's, else 8
  double alpha = 0;                  ///< lora_alpha; 0 = auto: the adapter's, else 8 (peft's)
  double dropout = 0.0;              ///< lora_dropout on the adapters' input (training only)
  std::string adapter;  ///< a peft adapter folder to start from (adapter_config.json and
                        ///< adapter_model.safetensors); it says the targets, rank and alpha
  bool enabled() const { return !targets.empty() || !target_regex.empty() || !adapter.empty(); }
};

/// model: a zoo name plus that model's own options (checked by the model's factory), and how
/// to start from pretrained weights.
struct ModelSection {
  std::string name;                ///< registry name, e.g. convnet (required)
  std::string name_where;          ///< where name was set ("run.yaml:7"), for errors
  std::string pretrained;          ///< weights to start from: .safetensors, .pt or .pth state dict
  bool pretrained_strict = false;  ///< false: load what fits, report the rest (new heads)
  std::vector<std::string> remap;  ///< key rules "old_prefix=new_prefix" ("backbone.=" strips)
  std::vector<std::string> freeze; ///< parameter-name patterns (* and ? wildcards) kept frozen
  int64_t unfreeze_at_epoch = 0;   ///< unfreeze them when this epoch starts (0 = never)
  std::vector<std::string> head;   ///< parameter-name patterns of the head (full lr)
  double backbone_lr_scale = 1.0;  ///< lr multiplier for parameters outside `head`
  LoraSection lora;                ///< LoRA adapters (off unless targets or adapter are set)
  Params params{"model"};          ///< every other key under model:
};

/// checkpoint: when full training checkpoints are written and which are kept.
struct CheckpointSection {
  int64_t every_n_steps = 0;       ///< also every N optimizer steps (0 = off)
  int64_t every_n_epochs = 1;      ///< after every N epochs (0 = off)
  int64_t keep_last = 2;           ///< newest checkpoints kept (besides the best)
  std::string monitor;             ///< metric for "best" (empty = the task's default)
  std::string mode;                ///< min | max (empty = the metric's direction, Task's table)
  bool save_best = true;           ///< also keep the checkpoint with the best `monitor` value
  bool async = false;              ///< copy to host memory, write on a background thread
};

/// A hyperparameter schedule: a pure function of the global step (plateau alone keeps state).
/// The same section drives the learning rate, momentum / beta1 and weight decay; `base` is the
/// optimizer's value (optim.lr, optim.momentum, optim.weight_decay).
struct ScheduleSection {
  std::string name = "constant";   ///< constant | step | multistep | exponential | cosine |
                                   ///< polynomial | onecycle | wsd | plateau
  std::string interval = "step";   ///< step: counts optimizer steps; epoch: counts whole epochs
  int64_t warmup_steps = 0;        ///< linear warmup (in `interval` units) into the schedule
  double warmup_fraction = 0.0;    ///< or as a part of all steps (used when warmup_steps is 0)
  double warmup_start_factor = 0.01;  ///< warmup starts at base·factor (torch LinearLR)
  double min_ratio = 0.0;          ///< floor as a fraction of base (cosine eta_min, wsd, onecycle)
  int64_t step_size = 1;           ///< step: every step_size units multiply by gamma
  double gamma = 0.1;              ///< step, multistep, exponential
  std::vector<int64_t> milestones; ///< multistep
  double power = 1.0;              ///< polynomial
  double pct_start = 0.3;          ///< onecycle: rising part
  double div_factor = 25.0;        ///< onecycle: start = base / div_factor
  double final_div_factor = 1e4;   ///< onecycle: end = start / final_div_factor
  double decay_fraction = 0.1;     ///< wsd: the last part of training that decays
  std::string monitor = "val/loss";  ///< plateau: metric to watch
  std::string mode = "auto";       ///< plateau: auto (the monitored metric's direction) | min | max
  double factor = 0.1;             ///< plateau: multiply by this when the metric stalls
  int64_t patience = 10;           ///< plateau: validations without improvement first
  double threshold = 1e-4;         ///< plateau: relative improvement that counts
};

/// optim: optimizer and its hyperparameter schedules.
struct OptimSection {
  std::string name = "adamw";      ///< sgd | adam | adamw | rmsprop
  double lr = 1e-3;                ///< learning rate (the base that optim.schedule scales)
  double weight_decay = 0.0;       ///< applied to weights of dim ≥ 2; never to biases and norms
  double momentum = 0.9;           ///< sgd, rmsprop (beta1 is betas[0] for adam/adamw)
  bool nesterov = false;           ///< sgd only
  std::vector<double> betas = {0.9, 0.999};  ///< adam, adamw
  double eps = 1e-8;               ///< adam, adamw, rmsprop
  double alpha = 0.99;             ///< rmsprop smoothing
  std::string fused = "auto";      ///< adamw: the fused ATen kernel — auto (CUDA, CPU), true, false
  /// Layer-wise lr decay (gpt2, bert, vit): a layer's lr is the one above's × this; embeddings
  /// lowest, the head at the full rate (timm's param_groups_layer_decay; models/layers.h). 1 = off.
  double layer_decay = 1.0;
  ScheduleSection schedule;        ///< learning rate
  ScheduleSection momentum_schedule = off();      ///< momentum / beta1; name none = fixed
  ScheduleSection weight_decay_schedule = off();  ///< weight decay; name none = fixed

  /// A schedule named "none": the optimizer's value stays as configured.
  static ScheduleSection off() {
    ScheduleSection s;
    s.name = "none";
    return s;
  }
};

/// task: what is learnt, its loss and its metrics.
struct TaskSection {
  /// auto (the data's task: classification for idx, image_folder, text_csv; lm for text; data.task
  /// or the target column for csv) | classification | regression | lm. A value that disagrees
  /// with the data is a ConfigError; the resolved config holds the answer.
  std::string kind = "auto";
  std::string loss;                ///< default per kind: cross_entropy | mse (l1, huber) | cross_entropy
  double label_smoothing = 0.0;    ///< classification, lm
  std::vector<double> class_weights;  ///< classification: one weight per class
  double huber_delta = 1.0;        ///< regression with loss huber
  int64_t top_k = 5;               ///< classification: also report top-k accuracy (when k < classes)
  int64_t ignore_index = -100;     ///< lm: target id that carries no loss
};

/// trainer.early_stopping: stop when a validation metric stops improving.
struct EarlyStoppingSection {
  std::string monitor;             ///< e.g. val/loss; empty = off
  std::string mode = "auto";       ///< auto (the monitored metric's direction) | min | max
  int64_t patience = 3;            ///< validations without improvement before stopping
  double min_delta = 0.0;          ///< smallest change that counts as improvement
};

/// trainer.mlflow: also track the run on an MLflow tracking server (its REST API): params (the
/// resolved config), metrics, tags and artifacts. Off while tracking_uri is empty.
struct MlflowSection {
  std::string tracking_uri;        ///< http(s)://host:port of an `mlflow server`; empty = off
  std::string experiment = "Default";  ///< created when the server has none of that name
  std::string run_name;            ///< empty = run.name
};

/// trainer.ema: an exponential moving average of the weights, as timm's ModelEmaV3 keeps it.
/// After optimizer step s: ema = decay_s · ema + (1 − decay_s) · weights for floating-point
/// parameters and buffers (integer buffers are copied), where decay_s = 0 (a copy) while
/// s ≤ update_after_step + 1, else `decay`, or with `warmup`
/// clamp(1 − (1 + n / warmup_gamma)^−warmup_power, min_decay, decay) for n = s − update_after_step − 1.
struct EmaSection {
  double decay = 0.0;              ///< 0 = off; else in (0, 1), e.g. 0.9999
  bool warmup = false;             ///< timm's use_warmup: the decay grows with the step
  double warmup_gamma = 1.0;       ///< the warmup's time scale in steps (the formula above)
  double warmup_power = 2.0 / 3.0; ///< the warmup's exponent (the formula above)
  double min_decay = 0.0;          ///< the warmup's floor
  int64_t update_after_step = 0;   ///< copy the weights (decay 0) until this many steps have passed
  std::string buffers = "average"; ///< average | copy (timm's exclude_buffers: buffers are copied)
  bool enabled() const { return decay > 0; }
};

/// trainer.profile: record some training steps with LibTorch's profiler (Kineto).
struct ProfileSection {
  std::vector<int64_t> steps;      ///< [first, last] optimizer steps to record (1-based,
                                   ///< inclusive); empty = off. `lathe train --profile` = [6, 10]
  std::string path;                ///< folder for trace.json and the tables; empty = <run>/profile
  int64_t rows = 20;               ///< rows in each table of top operators and model parts
};

/// trainer: how long, how each step is done, and how it reports.
struct TrainerSection {
  int64_t max_epochs = 5;          ///< epochs to train (unless max_steps or early stopping ends it first)
  int64_t max_steps = 0;           ///< stop after this many optimizer steps (0 = no limit)
  int64_t val_every_n_steps = 0;   ///< validate every N optimizer steps (0 = after each epoch)
  int64_t accumulate_grad_batches = 1;  ///< batches whose gradients add up to one optimizer step
  double gradient_clip_val = 0.0;  ///< 0 = no clipping
  std::string gradient_clip_algorithm = "norm";  ///< norm | value
  std::string precision = "auto";  ///< auto (bf16 on CUDA devices that have it, else 32) | 32 |
                                   ///< bf16 (autocast) | fp16 (autocast + gradient scaler)
  std::string channels_last = "auto";  ///< auto (on CUDA for models with 4-d weights) | true | false
  bool cuda_graphs = false;        ///< capture the step as a CUDA graph and replay it (static shapes,
                                   ///< CUDA, fused adamw, no accumulation/fp16/checkpointing/
                                   ///< unfreezing; else eager, with the reason logged)
  std::string matmul_precision = "auto";  ///< float32 matmuls on CUDA: auto (high = TF32 with
                                          ///< precision 32 and run.deterministic off, else
                                          ///< highest) | highest | high | medium
  int64_t log_every_n_steps = 50;  ///< a train/loss row in metrics.jsonl every N optimizer steps
  std::string progress = "auto";   ///< auto (bar on a terminal) | bar | plain | none
  bool csv = true;                 ///< metrics.csv beside metrics.jsonl
  bool tensorboard = true;         ///< TensorBoard event file under tensorboard/
  EarlyStoppingSection early_stopping;
  MlflowSection mlflow;
  EmaSection ema;                  ///< validated and tested beside the raw weights (val_ema/...)
  ProfileSection profile;
};

/// dist: data-parallel training over several processes (lathe train --devices N, or torchrun).
/// One process per device; data.batch_size stays the global batch (each rank takes
/// batch_size / world size), so a run and its checkpoints mean the same at any world size.
struct DistSection {
  std::string backend = "auto";    ///< auto (nccl on cuda, gloo on cpu) | gloo | nccl
  double bucket_mb = 25.0;         ///< gradients are all-reduced in buckets of about this size
  double timeout_s = 60.0;         ///< a collective (or the rendezvous) waiting longer fails
};

/// A whole run config. `source` is the file it was read from (or "<string>").
struct RunConfig {
  RunSection run;
  DataSection data;
  ModelSection model;
  TaskSection task;
  OptimSection optim;
  TrainerSection trainer;
  CheckpointSection checkpoint;
  DistSection dist;
  std::string source;

  /// runs/<name>
  std::filesystem::path run_dir() const { return std::filesystem::path(run.dir) / run.name; }
};

/// Reads a YAML config file and applies "section.key=value" overrides (values in YAML syntax, so
/// `data.mean=[0.5]` sets a list). Every problem is a ConfigError naming the file, line and key:
/// an unknown key (with a "did you mean"), a wrong type, a missing required field, a bad override.
///
///   auto cfg = lathe::config::load_config("configs/fashion_cnn.yaml", {"trainer.max_epochs=1"});
RunConfig load_config(const std::filesystem::path& file,
                      const std::vector<std::string>& overrides = {});

/// Same as load_config, from YAML text; `origin` names it in errors.
RunConfig parse_config(std::string_view yaml, std::string_view origin,
                       const std::vector<std::string>& overrides = {});

/// A model: section alone, from a name and "key=value" options (as `lathe info --model` takes
/// them); the same typing and errors as in a config file.
ModelSection parse_model_section(const std::string& name, const std::vector<std::string>& options);

/// The resolved config (every default filled in) as YAML; load_config reads it back unchanged.
std::string to_yaml(const RunConfig& cfg);

/// One key of a run config as the schema lists it.
struct ConfigKey {
  std::string key;            ///< dotted path, e.g. trainer.early_stopping.patience
  std::string type;           ///< string | integer | number | boolean | list of ... | mapping
  std::string default_yaml;   ///< the default as YAML text; empty for a required key
  bool required = false;
};

/// Every key of a run config in the order its sections list them: the same one list of fields
/// per section that reading (load_config) and writing (to_yaml) go through. The model's own
/// options and the entries of data.columns are checked by their users and are not in it.
std::vector<ConfigKey> config_keys();

}  // namespace lathe::config
