#include "training/eval.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "training/fused_one_step.h"
#include "training/metrics.h"
#include "training/png.h"

namespace dd2 {
namespace {

class TeacherSampler : public TokenSampler {
 public:
  TeacherSampler(ArTransformer teacher, torch::Tensor codebook, SamplingConfig sampling)
      : teacher_(std::move(teacher)), codebook_(std::move(codebook)), sampling_(sampling) {}
  torch::Tensor Sample(const torch::Tensor& classes, at::Generator& generator) override {
    auto idx = SampleAr(teacher_, codebook_, classes, sampling_, generator);
    return codebook_.index_select(0, idx.view(-1)).view({idx.size(0), idx.size(1), codebook_.size(1)});
  }

 private:
  ArTransformer teacher_;
  torch::Tensor codebook_;
  SamplingConfig sampling_;
};

class SetPredictionSampler : public TokenSampler {
 public:
  SetPredictionSampler(ArTransformer teacher, torch::Tensor codebook, SamplingConfig sampling,
                       int64_t marginal_samples, uint64_t seed)
      : codebook_(std::move(codebook)) {
    const int64_t n = teacher->options().tokens, v = teacher->options().vocab, k = teacher->options().classes;
    auto gen = MakeGenerator(seed);
    auto counts = torch::zeros({k, n, v}, torch::kFloat64);
    for (int64_t done = 0; done < marginal_samples; done += 250) {
      auto classes = torch::arange(done, std::min(done + 250, marginal_samples), torch::kLong) % k;
      auto idx = SampleAr(teacher, codebook_, classes.to(codebook_.device()), sampling, gen).cpu();  // [b, n]
      auto flat = (classes.unsqueeze(1) * n + torch::arange(n, torch::kLong).unsqueeze(0)) * v + idx;
      counts.view(-1).index_add_(0, flat.view(-1), torch::ones({flat.numel()}, torch::kFloat64));
    }
    marginals_ = (counts / counts.sum(-1, true).clamp_min(1)).to(torch::kFloat32);
  }
  torch::Tensor Sample(const torch::Tensor& classes, at::Generator& generator) override {
    auto probs = marginals_.index_select(0, classes.cpu());                    // [B, n, V]
    auto idx = torch::multinomial(probs.view({-1, probs.size(2)}), 1, false, generator)
                   .view({classes.size(0), -1})
                   .to(codebook_.device());
    return codebook_.index_select(0, idx.view(-1)).view({idx.size(0), idx.size(1), codebook_.size(1)});
  }

 private:
  torch::Tensor codebook_;
  torch::Tensor marginals_;  // [classes, tokens, V], on the CPU with the generator
};

// Wall time per image of sampling tokens, and of decoding them too when `decode`: the median
// of `repeats` timed calls after a warm-up call. InferenceMode.
double MsPerImage(TokenSampler& sampler, Tokenizer& tok, int64_t batch, int repeats, uint64_t seed, bool decode = true) {
  c10::InferenceMode inference;
  auto gen = MakeGenerator(seed);
  const torch::Device device = tok->Codebook().device();
  auto classes = (torch::arange(batch, torch::kLong) % 10).to(device);
  auto run = [&] {
    auto tokens = sampler.Sample(classes, gen);
    if (decode) tokens = tok->Decode(tokens);
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  run();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + repeats / 2, ms.end());
  return ms[repeats / 2] / static_cast<double>(batch);
}

// Batch-1 times of the sampler and the teacher, measured side by side: teacher, sampler,
// teacher, each a block of timed calls on the same threads; the teacher's two blocks averaged,
// so that drift of the machine during the measurement cancels to first order.
struct SideBySide {
  double sampler_ms, teacher_ms;
};
SideBySide TimeSideBySide(TokenSampler& sampler, TokenSampler& teacher, Tokenizer& tok, uint64_t seed, bool decode) {
  const double before = MsPerImage(teacher, tok, 1, 21, seed, decode);
  const double ms = MsPerImage(sampler, tok, 1, 21, seed, decode);
  const double after = MsPerImage(teacher, tok, 1, 21, seed, decode);
  return {ms, (before + after) / 2};
}

torch::Tensor Batched(int64_t n, int64_t batch, const std::function<torch::Tensor(int64_t, int64_t)>& fn) {
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < n; i += batch) parts.push_back(fn(i, std::min(i + batch, n)));
  return torch::cat(parts);
}

torch::Tensor Snap(const torch::Tensor& x, const torch::Tensor& codebook) {
  auto idx = torch::cdist(x.reshape({-1, x.size(-1)}), codebook).argmin(-1);
  return codebook.index_select(0, idx).view(x.sizes());
}

// On the CPU, a generator of our architecture runs through FusedOneStep (the same samples to
// float rounding, without LibTorch's per-op cost) on the job's intra-op threads; anything else
// through ArDiffusion::Generate.
class OneStepSampler : public TokenSampler {
 public:
  OneStepSampler(ArDiffusion generator, int64_t code_dim) : generator_(std::move(generator)), code_dim_(code_dim) {
    if (FusedOneStep::Supports(generator_)) fused_.emplace(generator_, at::get_num_threads());
  }
  torch::Tensor Sample(const torch::Tensor& classes, at::Generator& gen) override {
    const int64_t n = generator_->backbone()->options().tokens;
    auto eps = torch::randn({classes.size(0), n, code_dim_}, gen).to(classes.device());
    return fused_ && eps.device().is_cpu() ? fused_->Generate(classes, eps) : generator_->Generate(classes, eps);
  }

 private:
  ArDiffusion generator_;
  int64_t code_dim_;
  std::optional<FusedOneStep> fused_;
};

class MultiStepSampler : public TokenSampler {
 public:
  MultiStepSampler(ArDiffusion generator, ArTransformer teacher, torch::Tensor codebook, SamplingConfig sampling,
                   int64_t k, bool snap)
      : one_step_(generator, codebook.size(1)), teacher_(std::move(teacher)), codebook_(std::move(codebook)),
        sampling_(sampling), k_(k), snap_(snap) {}
  torch::Tensor Sample(const torch::Tensor& classes, at::Generator& gen) override {
    auto x = one_step_.Sample(classes, gen);
    const int64_t n = x.size(1);
    if (snap_) x = Snap(x, codebook_);
    for (int64_t i = std::max<int64_t>(1, n - k_ + 1); i < n; ++i) {
      auto log_p = TeacherLogProbsFor(teacher_, classes, x.slice(1, 0, i), sampling_).select(1, i);
      auto idx = torch::multinomial(log_p.exp().cpu(), 1, false, gen).squeeze(1).to(x.device());
      x = x.clone();
      x.select(1, i).copy_(codebook_.index_select(0, idx));
    }
    return x;
  }

 private:
  OneStepSampler one_step_;
  ArTransformer teacher_;
  torch::Tensor codebook_;
  SamplingConfig sampling_;
  int64_t k_;
  bool snap_;
};

class EulerSampler : public TokenSampler {
 public:
  EulerSampler(ArDiffusion model, int64_t steps, torch::Tensor codebook, bool snap)
      : model_(std::move(model)), steps_(steps), codebook_(std::move(codebook)), snap_(snap) {}
  torch::Tensor Sample(const torch::Tensor& classes, at::Generator& gen) override {
    const int64_t n = model_->backbone()->options().tokens, c = codebook_.size(1), b = classes.size(0);
    auto x = torch::zeros({b, n, c}, codebook_.options());
    KvCache cache;  // the features of token i from the tokens before it, one position at a time
    for (int64_t i = 0; i < n; ++i) {
      auto f = model_->backbone()->StepHidden(classes, i > 0 ? x.select(1, i - 1) : torch::Tensor(), i, cache);
      auto xi = torch::randn({b, c}, gen).to(x.device());
      for (int64_t s = 0; s < steps_; ++s) {
        auto t = torch::full({b}, 1.0 - static_cast<double>(s) / steps_, x.options());
        xi = xi - model_->Velocity(xi, t, f) / static_cast<double>(steps_);
      }
      if (snap_) xi = Snap(xi, codebook_);
      x.select(1, i).copy_(xi);
    }
    return x;
  }

 private:
  ArDiffusion model_;
  int64_t steps_;
  torch::Tensor codebook_;
  bool snap_;
};

}  // namespace

std::unique_ptr<TokenSampler> MakeOneStepSampler(ArDiffusion generator, int64_t code_dim) {
  return std::make_unique<OneStepSampler>(std::move(generator), code_dim);
}

std::unique_ptr<TokenSampler> MakeMultiStepSampler(ArDiffusion generator, ArTransformer teacher, torch::Tensor codebook,
                                                   SamplingConfig sampling, int64_t k, bool snap) {
  return std::make_unique<MultiStepSampler>(std::move(generator), std::move(teacher), std::move(codebook), sampling, k,
                                            snap);
}

std::unique_ptr<TokenSampler> MakeEulerSampler(ArDiffusion model, int64_t steps, torch::Tensor codebook, bool snap) {
  return std::make_unique<EulerSampler>(std::move(model), steps, std::move(codebook), snap);
}

std::unique_ptr<TokenSampler> MakeTeacherSampler(ArTransformer teacher, torch::Tensor codebook,
                                                 SamplingConfig sampling) {
  return std::make_unique<TeacherSampler>(std::move(teacher), std::move(codebook), sampling);
}

std::unique_ptr<TokenSampler> MakeSetPredictionSampler(ArTransformer teacher, torch::Tensor codebook,
                                                       SamplingConfig sampling, int64_t marginal_samples,
                                                       uint64_t seed) {
  return std::make_unique<SetPredictionSampler>(std::move(teacher), std::move(codebook), sampling,
                                                marginal_samples, seed);
}

double TeacherNll(ArTransformer& teacher, const torch::Tensor& codebook, const torch::Tensor& classes,
                  const torch::Tensor& codes) {
  torch::NoGradGuard no_grad;
  const int64_t b = codes.size(0), n = codes.size(1), v = codebook.size(0);
  // Sequences per forward pass: logits [chunk, n, V] stay under 2^26 floats (256 MB), so a
  // 16,384-code teacher at 256 tokens takes 16 at a time.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 26) / (n * v));
  double sum = 0;
  for (int64_t a = 0; a < b; a += chunk) {
    auto c = codes.slice(0, a, a + chunk);
    auto vectors = codebook.index_select(0, c.reshape(-1)).view({c.size(0), n, codebook.size(1)});
    auto logits = teacher->forward(classes.slice(0, a, a + chunk), vectors.slice(1, 0, n - 1));  // [c, n, V]
    sum += torch::cross_entropy_loss(logits.reshape({-1, v}), c.reshape(-1), {}, at::Reduction::Sum).item<double>();
  }
  return sum / static_cast<double>(b * n);
}

absl::StatusOr<std::map<std::string, double>> Evaluate(TokenSampler& sampler, TokenSampler* teacher, Tokenizer& tok,
                                                       FeatureNet* features, const ImageSet* real,
                                                       const EvalOptions& o, ArTransformer* likelihood_teacher) {
  torch::NoGradGuard no_grad;
  const bool scored = features != nullptr && real != nullptr;
  auto gen = MakeGenerator(o.seed);
  auto codebook = tok->Codebook();
  auto classes = (torch::arange(o.samples, torch::kLong) % 10).to(codebook.device());
  torch::Tensor nearest_sum = torch::zeros({}, codebook.options().dtype(torch::kFloat64));
  int64_t tokens = 0;
  double nll_sum = 0;
  std::vector<torch::Tensor> images;  // decoded only when the feature network scores them
  for (int64_t a = 0; a < o.samples; a += o.batch) {
    const int64_t b = std::min(a + o.batch, o.samples);
    auto vectors = sampler.Sample(classes.slice(0, a, b), gen);
    auto [d, nearest] = torch::cdist(vectors.reshape({-1, vectors.size(2)}), codebook).min(-1);
    nearest_sum += d.sum().to(torch::kFloat64);
    tokens += d.numel();
    if (likelihood_teacher != nullptr) {
      nll_sum += static_cast<double>(b - a) *
                 TeacherNll(*likelihood_teacher, codebook, classes.slice(0, a, b), nearest.view({b - a, -1}));
    }
    if (scored) images.push_back(tok->Pixels(tok->Decode(vectors)));
  }
  std::map<std::string, double> m;
  if (scored) {  // the feature network's scores, for Fashion-MNIST images
    auto all = torch::cat(images);
    auto fake_feats = Batched(o.samples, 500, [&](int64_t a, int64_t b) { return (*features)->Features(all.slice(0, a, b)); });
    auto fake_probs = (*features)->Classify(fake_feats).softmax(-1);  // no second pass over the images
    auto real_feats = Batched(real->images.size(0), 1000, [&](int64_t a, int64_t b) {
      return (*features)->Features(real->images.slice(0, a, b).to(codebook.device()));
    });
    m["fid"] = Fid(fake_feats, real_feats);
    m["inception_score"] = InceptionScore(fake_probs);
    const int64_t pr_n = std::min<int64_t>({o.samples, real_feats.size(0), 5000});
    auto pr = KnnPrecisionRecall(real_feats.slice(0, 0, pr_n), fake_feats.slice(0, 0, pr_n), 3);
    m["precision"] = pr.precision;
    m["recall"] = pr.recall;
    m["class_accuracy"] = fake_probs.argmax(1).eq(classes).to(torch::kFloat64).mean().item<double>();
  }
  m["codebook_distance"] = nearest_sum.item<double>() / static_cast<double>(std::max<int64_t>(tokens, 1));
  if (likelihood_teacher != nullptr) m["teacher_nll"] = nll_sum / static_cast<double>(o.samples);
  m["latency_ms_b256"] = MsPerImage(sampler, tok, 256, 1, o.seed + 8);
  if (teacher == nullptr || teacher == &sampler) {
    m["latency_ms_b1"] = MsPerImage(sampler, tok, 1, 21, o.seed + 7);
    if (teacher != nullptr) m["speedup_vs_teacher_b1"] = m["token_speedup_vs_teacher_b1"] = 1.0;  // by definition
  } else {
    const SideBySide images = TimeSideBySide(sampler, *teacher, tok, o.seed + 7, true);
    m["latency_ms_b1"] = images.sampler_ms;
    m["speedup_vs_teacher_b1"] = images.teacher_ms / images.sampler_ms;
    // Token sampling alone (the decoder is the same for every sampler).
    const SideBySide tokens = TimeSideBySide(sampler, *teacher, tok, o.seed + 7, false);
    m["token_speedup_vs_teacher_b1"] = tokens.teacher_ms / tokens.sampler_ms;
  }
  if (!o.grid_path.empty()) {  // 10 x 10 samples, a class per row
    auto grid_gen = MakeGenerator(o.seed + 9);
    auto grid_classes = torch::div(torch::arange(100, torch::kLong), 10, "floor").to(codebook.device());
    auto grid = tok->Pixels(tok->Decode(sampler.Sample(grid_classes, grid_gen)));  // [100, ch, H, W]
    const int64_t ch = grid.size(1), h = grid.size(2), w = grid.size(3);
    auto tiled = grid.view({10, 10, ch, h, w}).permute({0, 3, 1, 4, 2}).reshape({10 * h, 10 * w, ch});
    auto bytes = (tiled * 255).round().to(torch::kUInt8).cpu().contiguous();
    std::vector<uint8_t> pixels(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel());
    const int width = static_cast<int>(10 * w), height = static_cast<int>(10 * h);
    auto st = ch == 3 ? WriteRgbPng(o.grid_path, width, height, pixels) : WriteGrayPng(o.grid_path, width, height, pixels);
    if (!st.ok()) return st;
  }
  return m;
}

}  // namespace dd2
