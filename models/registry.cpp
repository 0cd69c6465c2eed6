// The registry: one explicit list of zoo entries (no static registrars the linker could drop).
#include "models/registry.h"

#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "models/cnn/convnet.h"

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

}  // namespace

const std::vector<ModelSpec>& model_specs() {
  static const std::vector<ModelSpec> specs = {
      {"convnet", "small CNN for 28x28/32x32 images (conv-BN-ReLU-pool stages, MLP head)",
       build_convnet},
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
  throw ConfigError(fmt::format("{}: model.name: unknown model '{}'{}; the zoo has: {}",
                                model.name_where, name,
                                hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
                                fmt::join(names, ", ")));
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace lathe::models
