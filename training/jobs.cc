#include "training/jobs.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/home.h"
#include "training/checkpoint.h"
#include "training/data.h"
#include "training/eval.h"
#include "training/metrics.h"
#include "training/models.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;
using Metrics = std::map<std::string, double>;

int Fail(const std::string& what) {
  std::fprintf(stderr, "dd2 job: %s\n", what.c_str());
  return 1;
}

int Fail(const absl::Status& st) { return Fail(std::string(st.message())); }

// Deterministic minibatches: epoch e is a permutation seeded by (seed, e); step s takes the
// s-th slice. Nothing to save for exact resume.
class Batcher {
 public:
  Batcher(int64_t n, int64_t batch, uint64_t seed) : n_(n), batch_(batch), seed_(seed) {}
  torch::Tensor Indices(int64_t step) {
    const int64_t per_epoch = std::max<int64_t>(1, n_ / batch_);
    const int64_t epoch = step / per_epoch, offset = (step % per_epoch) * batch_;
    if (epoch != epoch_) {
      auto gen = MakeGenerator(seed_ * 1000003 + static_cast<uint64_t>(epoch));
      perm_ = torch::randperm(n_, gen, torch::kLong);
      epoch_ = epoch;
    }
    return perm_.slice(0, offset, std::min(offset + batch_, n_));
  }

 private:
  int64_t n_, batch_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  torch::Tensor perm_;
};

struct Loop {
  int64_t steps = 1000;
  int64_t checkpoint_every = 200;
  int64_t report_every = 10;
  NamedModules modules;
  torch::optim::Optimizer* optimizer = nullptr;
  // One optimisation step; returns metrics to report.
  std::function<Metrics(int64_t step)> step;
};

// Resumes from <out>/checkpoint.pt when present, runs to `steps`, checkpointing every
// checkpoint_every steps and on SIGTERM (then exits 143), and writes <out>/final.pt.
int RunLoop(JobContext& ctx, Loop& loop) {
  const std::string ckpt = ctx.out_dir() + "/checkpoint.pt";
  int64_t start = 0;
  auto resumed = LoadCheckpoint(ckpt, loop.modules, loop.optimizer);
  if (resumed.ok()) {
    start = *resumed;
    std::printf("resumed from %s at step %lld\n", ckpt.c_str(), static_cast<long long>(start));
  } else if (!absl::IsNotFound(resumed.status())) {
    return Fail(resumed.status());
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = start; step < loop.steps; ++step) {
    if (ctx.StopRequested()) {
      auto st = SaveCheckpoint(ckpt, loop.modules, loop.optimizer, step);
      std::printf("stop requested: checkpointed at step %lld (%s)\n", static_cast<long long>(step),
                  st.ok() ? "ok" : std::string(st.message()).c_str());
      return 143;
    }
    Metrics m = loop.step(step);
    const int64_t done = step + 1;
    if (done % loop.report_every == 0 || done == loop.steps) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      m["steps_per_s"] = static_cast<double>(done - start) / std::max(secs, 1e-9);
      ctx.ReportProgress(static_cast<uint64_t>(done), static_cast<uint64_t>(loop.steps), m);
      std::string line;
      for (const auto& [k, v] : m) absl::StrAppend(&line, " ", k, "=", v);
      std::printf("step %lld/%lld%s\n", static_cast<long long>(done), static_cast<long long>(loop.steps), line.c_str());
      std::fflush(stdout);
    }
    if (loop.checkpoint_every > 0 && done % loop.checkpoint_every == 0 && done < loop.steps) {
      if (auto st = SaveCheckpoint(ckpt, loop.modules, loop.optimizer, done); !st.ok()) return Fail(st);
    }
  }
  if (auto st = SaveCheckpoint(ctx.out_dir() + "/final.pt", loop.modules, nullptr, loop.steps); !st.ok()) {
    return Fail(st);
  }
  return 0;
}

absl::Status WriteJson(const std::string& path, const Json& j) { return WriteFileAtomic(path, j.dump(2) + "\n"); }

absl::StatusOr<Json> ReadJson(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(path, ": missing (did the upstream job succeed?)"));
  Json j = Json::parse(*text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not JSON"));
  return j;
}

// Final metrics, reported at `step` (the job's last step) and written to metrics.json.
void ReportFinal(JobContext& ctx, const Metrics& m, int64_t step) {
  ctx.ReportProgress(static_cast<uint64_t>(step), static_cast<uint64_t>(step), m);
  Json j = m;
  WriteJson(ctx.out_dir() + "/metrics.json", j).IgnoreError();
  for (const auto& [k, v] : m) std::printf("final %s = %g\n", k.c_str(), v);
  std::fflush(stdout);
}

VqVaeOptions TokenizerOptions(const Json& p) {
  VqVaeOptions o;
  o.codebook_size = p.value("codebook_size", o.codebook_size);
  o.code_dim = p.value("code_dim", o.code_dim);
  o.channels = p.value("channels", o.channels);
  return o;
}

TransformerOptions TeacherOptions(const Json& p, const VqVaeOptions& tok) {
  TransformerOptions o;
  o.vocab = tok.codebook_size;
  o.code_dim = tok.code_dim;
  o.width = p.value("width", o.width);
  o.layers = p.value("layers", o.layers);
  o.heads = p.value("heads", o.heads);
  return o;
}

// Loads a trained tokenizer from the artifacts of job `name`.
absl::StatusOr<VqVae> LoadTokenizer(JobContext& ctx, const std::string& name) {
  auto config = ReadJson(ctx.ArtifactDir(name) + "/config.json");
  if (!config.ok()) return config.status();
  VqVae model(TokenizerOptions(*config));
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"vqvae", model.ptr()}}, nullptr);
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

absl::StatusOr<ArTransformer> LoadTeacher(JobContext& ctx, const std::string& name) {
  auto config = ReadJson(ctx.ArtifactDir(name) + "/config.json");
  if (!config.ok()) return config.status();
  TransformerOptions o;
  o.vocab = (*config)["vocab"];
  o.code_dim = (*config)["code_dim"];
  o.width = (*config)["width"];
  o.layers = (*config)["layers"];
  o.heads = (*config)["heads"];
  ArTransformer model(o);
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"teacher", model.ptr()}}, nullptr);
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

absl::StatusOr<FeatureNet> LoadFeatureNet(JobContext& ctx, const std::string& name) {
  FeatureNet model;
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"featurenet", model.ptr()}}, nullptr);
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

// Token indices of images, in chunks, without gradients: [N, 49].
torch::Tensor Tokenize(VqVae& tok, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += 1000) {
    out.push_back(tok->Quantize(tok->Encode(images.slice(0, i, i + 1000))));
  }
  return torch::cat(out);
}

}  // namespace

int RunTokenizerJob(JobContext& ctx) {
  const Json& p = ctx.params();
  torch::manual_seed(p.value("seed", 0));
  auto data = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "train", p.value("train_limit", 0));
  if (!data.ok()) return Fail(data.status());
  VqVaeOptions opts = TokenizerOptions(p);
  VqVae model(opts);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 1e-3)));
  std::filesystem::create_directories(ctx.out_dir());
  if (auto st = WriteJson(ctx.out_dir() + "/config.json", Json{{"codebook_size", opts.codebook_size},
                                                               {"code_dim", opts.code_dim},
                                                               {"channels", opts.channels}});
      !st.ok()) {
    return Fail(st);
  }
  const uint64_t seed = p.value("seed", 0);
  const int64_t restart_every = p.value("restart_every", 50);
  const int64_t restart_until = static_cast<int64_t>(p.value("steps", 1000) * 0.8);  // settle at the end
  int64_t restarted = 0;
  Batcher batcher(data->images.size(0), p.value("batch", 64), seed);
  Loop loop;
  loop.steps = p.value("steps", 1000);
  loop.checkpoint_every = p.value("checkpoint_every", 200);
  loop.modules = {{"vqvae", model.ptr()}};
  loop.optimizer = &adam;
  loop.step = [&](int64_t step) {
    auto x = data->images.index_select(0, batcher.Indices(step));
    auto out = model->forward(x);
    auto recon = torch::mse_loss(out.reconstruction, x);
    auto loss = recon + out.vq_loss;
    adam.zero_grad();
    loss.backward();
    adam.step();
    auto gen = MakeGenerator(seed * 7919 + static_cast<uint64_t>(step));
    const bool window_end = restart_every > 0 && (step + 1) % restart_every == 0 && step + 1 < restart_until;
    restarted += model->TrackAndRestart(out.indices, model->Encode(x), window_end, gen);
    return Metrics{{"recon_mse", recon.item<double>()}, {"vq_loss", out.vq_loss.item<double>()},
                   {"codes_restarted", static_cast<double>(restarted)}};
  };
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  // Held-out reconstruction and codebook usage.
  auto test = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "test", 2000);
  if (!test.ok()) return Fail(test.status());
  torch::NoGradGuard no_grad;
  model->eval();
  auto idx = Tokenize(model, test->images);
  auto recon = model->Decode(model->Codebook().index_select(0, idx.view(-1)).view({idx.size(0), 49, opts.code_dim}));
  auto counts = torch::bincount(idx.view(-1), {}, opts.codebook_size).to(torch::kFloat64);
  auto freq = counts / counts.sum();
  auto entropy = -(freq * (freq + 1e-12).log()).sum();
  ReportFinal(ctx, {{"test_recon_mse", torch::mse_loss(recon, test->images).item<double>()},
                    {"perplexity", entropy.exp().item<double>()},
                    {"codes_used", (counts > 0).sum().item<double>()}},
              loop.steps);
  return 0;
}

int RunTeacherJob(JobContext& ctx) {
  const Json& p = ctx.params();
  torch::manual_seed(p.value("seed", 0));
  auto tok = LoadTokenizer(ctx, p.value("tokenizer", std::string("tokenizer")));
  if (!tok.ok()) return Fail(tok.status());
  const std::string data_dir = p.value("data_dir", std::string(kFashionMnistDir));
  auto data = LoadFashionMnist(data_dir, "train", p.value("train_limit", 0));
  if (!data.ok()) return Fail(data.status());
  auto tokens = Tokenize(*tok, data->images);
  auto codebook = (*tok)->Codebook().detach();
  TransformerOptions opts = TeacherOptions(p, (*tok)->options());
  std::filesystem::create_directories(ctx.out_dir());
  if (auto st = WriteJson(ctx.out_dir() + "/config.json",
                          Json{{"vocab", opts.vocab}, {"code_dim", opts.code_dim}, {"width", opts.width},
                               {"layers", opts.layers}, {"heads", opts.heads}});
      !st.ok()) {
    return Fail(st);
  }
  ArTransformer model(opts);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 3e-4)).betas({0.9, 0.95}));
  const double dropout = p.value("label_dropout", 0.1);
  const uint64_t seed = p.value("seed", 0);
  Batcher batcher(tokens.size(0), p.value("batch", 64), seed);
  Loop loop;
  loop.steps = p.value("steps", 1000);
  loop.checkpoint_every = p.value("checkpoint_every", 200);
  loop.modules = {{"teacher", model.ptr()}};
  loop.optimizer = &adam;
  loop.step = [&](int64_t step) {
    auto idx = batcher.Indices(step);
    auto target = tokens.index_select(0, idx);                               // [B, 49]
    auto classes = data->labels.index_select(0, idx);
    auto gen = MakeGenerator(seed * 7919 + static_cast<uint64_t>(step));      // label dropout
    auto drop = torch::rand({classes.size(0)}, gen) < dropout;
    classes = classes.masked_fill(drop, opts.classes);
    auto prefix = codebook.index_select(0, target.slice(1, 0, 48).reshape(-1)).view({target.size(0), 48, opts.code_dim});
    auto logits = model->forward(classes, prefix);
    auto loss = torch::cross_entropy_loss(logits.reshape({-1, opts.vocab}), target.reshape(-1));
    adam.zero_grad();
    loss.backward();
    adam.step();
    return Metrics{{"loss", loss.item<double>()}};
  };
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  auto test = LoadFashionMnist(data_dir, "test", 2000);
  if (!test.ok()) return Fail(test.status());
  torch::NoGradGuard no_grad;
  model->eval();
  auto test_tokens = Tokenize(*tok, test->images);
  auto prefix = codebook.index_select(0, test_tokens.slice(1, 0, 48).reshape(-1)).view({test_tokens.size(0), 48, opts.code_dim});
  auto logits = model->forward(test->labels, prefix);
  auto nll = torch::cross_entropy_loss(logits.reshape({-1, opts.vocab}), test_tokens.reshape(-1));
  ReportFinal(ctx, {{"test_nll", nll.item<double>()}}, loop.steps);
  return 0;
}

int RunFeatureNetJob(JobContext& ctx) {
  const Json& p = ctx.params();
  torch::manual_seed(p.value("seed", 0));
  const std::string data_dir = p.value("data_dir", std::string(kFashionMnistDir));
  auto data = LoadFashionMnist(data_dir, "train", p.value("train_limit", 0));
  if (!data.ok()) return Fail(data.status());
  std::filesystem::create_directories(ctx.out_dir());
  FeatureNet model;
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 1e-3)));
  Batcher batcher(data->images.size(0), p.value("batch", 128), p.value("seed", 0));
  Loop loop;
  loop.steps = p.value("steps", 1500);
  loop.checkpoint_every = p.value("checkpoint_every", 500);
  loop.modules = {{"featurenet", model.ptr()}};
  loop.optimizer = &adam;
  const double lr = p.value("lr", 1e-3);
  loop.step = [&](int64_t step) {
    // Linear decay to 10% of the initial rate; a function of the step, so resume stays exact.
    for (auto& group : adam.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr * (1.0 - 0.9 * step / loop.steps));
    }
    auto idx = batcher.Indices(step);
    auto logits = model->forward(data->images.index_select(0, idx));
    auto loss = torch::cross_entropy_loss(logits, data->labels.index_select(0, idx));
    adam.zero_grad();
    loss.backward();
    adam.step();
    return Metrics{{"loss", loss.item<double>()}};
  };
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  auto test = LoadFashionMnist(data_dir, "test");
  if (!test.ok()) return Fail(test.status());
  torch::NoGradGuard no_grad;
  model->eval();
  auto correct = model->forward(test->images).argmax(1).eq(test->labels).to(torch::kFloat64).mean();
  ReportFinal(ctx, {{"test_accuracy", correct.item<double>()}}, loop.steps);
  return 0;
}

int RunEvalJob(JobContext& ctx) {
  const Json& p = ctx.params();
  auto tok = LoadTokenizer(ctx, p.value("tokenizer", std::string("tokenizer")));
  if (!tok.ok()) return Fail(tok.status());
  auto teacher = LoadTeacher(ctx, p.value("teacher", std::string("teacher")));
  if (!teacher.ok()) return Fail(teacher.status());
  auto features = LoadFeatureNet(ctx, p.value("featurenet", std::string("featurenet")));
  if (!features.ok()) return Fail(features.status());
  auto test = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "test");
  if (!test.ok()) return Fail(test.status());
  SamplingConfig sampling;
  sampling.cfg = p.value("cfg", 2.0);
  sampling.top_k = p.value("top_k", 0);
  sampling.top_p = p.value("top_p", 1.0);
  sampling.temperature = p.value("temperature", 1.0);
  EvalOptions options;
  options.samples = p.value("samples", 1000);
  options.batch = p.value("batch", 250);
  options.seed = p.value("seed", 0);
  options.grid_path = ctx.out_dir() + "/samples.png";
  std::filesystem::create_directories(ctx.out_dir());
  const std::string kind = p.value("sampler", std::string("teacher"));
  std::unique_ptr<TokenSampler> sampler;
  if (kind == "teacher") {
    sampler = MakeTeacherSampler(*teacher, (*tok)->Codebook().detach(), sampling);
  } else if (kind == "set_prediction") {
    sampler = MakeSetPredictionSampler(*teacher, (*tok)->Codebook().detach(), sampling,
                                       p.value("marginal_samples", 2000), options.seed + 1);
  } else {
    return Fail(absl::StrCat("unknown sampler '", kind, "'"));
  }
  auto teacher_sampler = MakeTeacherSampler(*teacher, (*tok)->Codebook().detach(), sampling);
  auto result = Evaluate(*sampler, teacher_sampler.get(), *tok, *features, *test, options);
  if (!result.ok()) return Fail(result.status());
  ReportFinal(ctx, *result, 1);
  std::printf("sample grid: %s\n", options.grid_path.c_str());
  return 0;
}

void RegisterTrainingJobTypes() {
  RegisterJobType("tokenizer", RunTokenizerJob);
  RegisterJobType("teacher", RunTeacherJob);
  RegisterJobType("featurenet", RunFeatureNetJob);
  RegisterJobType("eval", RunEvalJob);
}

}  // namespace dd2
