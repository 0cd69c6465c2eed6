// `lathe info --model`: a model's data-filled sizes, its module tree and its parameter count.
#include "lathe/run/model_info.h"

#include <sstream>

#include <torch/nn/module.h>

#include "models/registry.h"

namespace lathe::run {

ModelSummary summarize_model(const config::ModelSection& section) {
  ModelSummary out;
  for (const auto& s : models::model_spec(section).sizes)
    out.data_sizes.push_back(s.key + (section.params.has(s.key) ? " (given)" : ""));
  const auto module = models::build_model(section);
  std::ostringstream text;
  text << *module.ptr();
  out.module = text.str();
  out.parameters = models::parameter_count(*module.ptr());
  return out;
}

}  // namespace lathe::run
