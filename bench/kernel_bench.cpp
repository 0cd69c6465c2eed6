// kernel_bench: the zoo's own CPU kernels (models/kernels.h gelu_tanh, models/batch_norm.h
// BatchNorm2d in training, models/packed_gemm.h, models/lstm.h) against ATen's on the same
// tensors: milliseconds per call, forward and forward + backward, on one thread and on two, with
// the machine and the side the kernel chooser (lathe/core/kernel_choice.h) runs under auto. The
// shapes are gpt_tiny's MLP activation, ResNet-18's batch norms (32x32 stem, batch 16; five of each
// shape a step) plus the demo CNN's, and the products and the LSTM of train_bench's lstm_lm
// (2 x 256, embedding 64, vocab 96, batch 16 x 64).
//
//   build/release/bench/kernel_bench [--repeats 20] [--threads N]
//                                    [--only gelu,batch_norm,products,lstm]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/rnn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/batch_norm.h"
#include "models/kernels.h"
#include "models/lstm.h"
#include "models/packed_gemm.h"

namespace {

/// Median milliseconds of `fn` over `repeats` calls, after three warm-up calls.
template <class Fn>
double median_ms(int repeats, Fn&& fn) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

/// Forward alone and forward + backward (gradient `g`) of `f` on a leaf copy of x.
template <class F>
std::pair<double, double> time_both(int repeats, const at::Tensor& x, const at::Tensor& g, F&& f) {
  const at::Tensor leaf = x.detach().requires_grad_(true);
  const double fwd = median_ms(repeats, [&] {
    const at::NoGradGuard no_grad;
    f(leaf);
  });
  const double both = median_ms(repeats, [&] {
    f(leaf).backward(g);
    leaf.mutable_grad().reset();
  });
  return {fwd, both};
}

/// lathe's side of `f` timed with LATHE_KERNELS=lathe forced (ATen's is timed calling ATen).
template <class F>
std::pair<double, double> time_lathe(int repeats, const at::Tensor& x, const at::Tensor& g, F&& f) {
  const lathe::kernels::ScopedMode lathe_side(lathe::kernels::Mode::lathe);
  return time_both(repeats, x, g, f);
}

/// The side the chooser picks for `f` on x (auto), forward and forward + backward: "lathe/aten".
template <class F>
std::string auto_pick(const at::Tensor& x, const at::Tensor& g, F&& f) {
  std::string picks;
  for (const bool backward : {false, true}) {
    const auto before = lathe::bench::used_kernels();
    const at::Tensor leaf = x.detach().requires_grad_(backward);
    if (backward) {
      f(leaf).backward(g);
    } else {
      const at::NoGradGuard no_grad;
      f(leaf);
    }
    const auto after = lathe::bench::used_kernels();
    std::string side = "-";
    for (const auto& [what, s] : after)
      if (!before.count(what)) side = s;
    picks += (backward ? "/" : "") + side;
  }
  return picks;
}

void row(const std::string& what, std::pair<double, double> lathe, std::pair<double, double> aten,
         const std::string& pick) {
  std::printf("%-34s %9.3f %9.3f %9.3f %9.3f %7.2f %7.2f  %s\n", what.c_str(), lathe.first,
              aten.first, lathe.second, aten.second, lathe.first / aten.first,
              lathe.second / aten.second, pick.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 20;
  std::vector<int> thread_counts{1, 2};
  std::string only = ",gelu,batch_norm,products,lstm,";
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeats") repeats = std::stoi(argv[++i]);
    if (a == "--threads") thread_counts = {std::stoi(argv[++i])};
    if (a == "--only") only = "," + std::string(argv[++i]) + ",";
  }
  const auto wanted = [&](const char* part) {
    return only.find("," + std::string(part) + ",") != std::string::npos;
  };
  at::manual_seed(0);
  for (int threads : thread_counts) {
    at::set_num_threads(threads);
    std::printf("kernel_bench: %d thread(s), ms per call (median of %d)\n%s\n", threads, repeats,
                lathe::bench::machine_line(threads).c_str());
    std::printf("%-34s %9s %9s %9s %9s %7s %7s  %s\n", "kernel, shape", "lathe fwd", "ATen fwd",
                "lathe f+b", "ATen f+b", "fwd", "f+b", "auto runs fwd/f+b");
    if (wanted("gelu")) {
      const at::Tensor x = at::randn({8, 128, 512}), g = at::randn_like(x);
      const auto gelu = [](const at::Tensor& t) { return lathe::models::gelu_tanh(t); };
      row("gelu tanh (8, 128, 512)", time_lathe(repeats, x, g, gelu),
          time_both(repeats, x, g, [](const at::Tensor& t) { return at::gelu(t, "tanh"); }),
          auto_pick(x, g, gelu));
    }
    if (wanted("batch_norm")) {
      double resnet_lathe = 0, resnet_aten = 0;  // ResNet-18's twenty batch norms, f + b
      const std::vector<std::vector<int64_t>> shapes = {{16, 64, 32, 32},  {16, 128, 16, 16},
                                                        {16, 256, 8, 8},   {16, 512, 4, 4},
                                                        {128, 32, 28, 28}, {128, 64, 14, 14}};
      for (size_t k = 0; k < shapes.size(); ++k) {
        const auto& shape = shapes[k];
        const int64_t C = shape[1];
        lathe::models::BatchNorm2d ours(C);
        torch::nn::BatchNorm2d theirs(C);
        const at::Tensor x = at::randn(shape), g = at::randn(shape);
        const auto l = time_lathe(repeats, x, g, [&](const at::Tensor& t) { return ours(t); });
        const auto a = time_both(repeats, x, g, [&](const at::Tensor& t) { return theirs(t); });
        row("batch norm, train " + c10::str(at::IntArrayRef(shape)), l, a,
            auto_pick(x, g, [&](const at::Tensor& t) { return ours(t); }));
        if (k < 4) {
          resnet_lathe += 5 * l.second;
          resnet_aten += 5 * a.second;
        }
      }
      std::printf(
          "ResNet-18's batch norms a step (5 of each of the first four shapes), forward + "
          "backward: lathe %.1f ms, ATen %.1f ms\n\n",
          resnet_lathe, resnet_aten);
    }

    if (wanted("products")) {
      // C (m, n) = A (m, k) · B (k, n): lathe's PackedMatrix (packed once, as the LSTM packs its
      // recurrent weight once per sequence; and with the packing timed too) against at::mm (MKL).
      std::printf("%-46s %9s %9s %9s %8s %8s\n", "product (m, k)·(k, n)", "lathe ms", "+pack ms",
                  "at::mm ms", "lathe GF", "mm GF");
      struct Product {
        const char* what;
        int64_t m, k, n;
        bool a_transposed;
      };
      for (const Product& p : {Product{"LSTM step forward", 16, 256, 1024, false},
                               Product{"LSTM step backward", 16, 1024, 256, false},
                               Product{"input projection, 1024 rows", 1024, 256, 1024, false},
                               Product{"input gradient", 1024, 1024, 256, false},
                               Product{"weight gradient (Aᵀ given)", 1024, 1024, 256, true}}) {
        const at::Tensor a = p.a_transposed ? at::randn({p.k, p.m}) : at::randn({p.m, p.k});
        const at::Tensor a_op = p.a_transposed ? a.t() : a;
        const at::Tensor b = at::randn({p.k, p.n});
        at::Tensor c = at::empty({p.m, p.n});
        const lathe::models::PackedMatrix packed(b, false);
        const int64_t lda = p.a_transposed ? p.m : p.k;
        const lathe::kernels::ScopedMode lathe_side(lathe::kernels::Mode::lathe);
      const double lathe_ms = median_ms(repeats, [&] {
          packed.multiply(a.const_data_ptr<float>(), lda, p.m, c.mutable_data_ptr<float>(), p.n,
                          false, p.a_transposed);
        });
        const double with_pack = median_ms(repeats, [&] {
          lathe::models::PackedMatrix(b, false).multiply(a.const_data_ptr<float>(), lda, p.m,
                                                         c.mutable_data_ptr<float>(), p.n, false,
                                                         p.a_transposed);
        });
        const double mm_ms = median_ms(repeats, [&] { at::mm_out(c, a_op, b); });
        const double gflop = 2e-6 * static_cast<double>(p.m * p.k * p.n);
        std::printf("%-46s %9.3f %9.3f %9.3f %8.1f %8.1f\n",
                    c10::str(p.what, " (", p.m, ", ", p.k, ")·(", p.k, ", ", p.n, ")").c_str(),
                    lathe_ms, with_pack, mm_ms, gflop / lathe_ms, gflop / mm_ms);
      }
    }

    // The LSTM LM's recurrent stack: lathe's lstm_forward (token ids through the table) against
    // torch's LSTM on the embedded ids (oneDNN), forward and forward + backward.
    if (wanted("lstm")) {
      torch::nn::LSTM lstm(torch::nn::LSTMOptions(64, 256).num_layers(2).batch_first(true));
      const at::Tensor embedding = at::randn({96, 64}).requires_grad_(true);
      const at::Tensor ids = at::randint(96, {16, 64}, at::kLong);
      const at::Tensor g = at::randn({16, 64, 256});
      const auto time = [&](bool own) {
        const lathe::kernels::ScopedMode lathe_side(lathe::kernels::Mode::lathe);
        const auto run = [&] {
          return own ? std::get<0>(lathe::models::lstm_forward(*lstm, ids, embedding))
                     : std::get<0>(lstm->forward(at::embedding(embedding, ids)));
        };
        const double fwd = median_ms(repeats, [&] {
          const at::NoGradGuard no_grad;
          run();
        });
        const double both = median_ms(repeats, [&] { run().backward(g); });
        return std::pair{fwd, both};
      };
      const at::Tensor unused = at::zeros({1});
      row("LSTM 2 x 256 over ids (16, 64)", time(true), time(false),
          auto_pick(unused, g, [&](const at::Tensor&) {
            return std::get<0>(lathe::models::lstm_forward(*lstm, ids, embedding));
          }));
    }
    std::printf("\n");
  }
  return 0;
}
