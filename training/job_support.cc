#include "training/job_support.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/home.h"

namespace dd2 {


int Fail(const std::string& what) {
  std::fprintf(stderr, "dd2 job: %s\n", what.c_str());
  return 1;
}

int Fail(const absl::Status& st) { return Fail(std::string(st.message())); }

// Resumes from <out>/checkpoint.pt when present, runs to `steps`, checkpointing every
// checkpoint_every steps and on SIGTERM (then exits 143), and writes <out>/final.pt.
int RunLoop(JobContext& ctx, Loop& loop) {
  const std::string ckpt = ctx.out_dir() + "/checkpoint.pt";
  int64_t start = 0;
  auto resumed = LoadCheckpoint(ckpt, loop.modules, loop.optimizers);
  if (resumed.ok()) {
    start = *resumed;
    std::printf("resumed from %s at step %lld\n", ckpt.c_str(), static_cast<long long>(start));
  } else if (!absl::IsNotFound(resumed.status())) {
    return Fail(resumed.status());
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = start; step < loop.steps; ++step) {
    if (ctx.StopRequested()) {
      auto st = SaveCheckpoint(ckpt, loop.modules, loop.optimizers, step);
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
      if (auto st = SaveCheckpoint(ckpt, loop.modules, loop.optimizers, done); !st.ok()) return Fail(st);
    }
  }
  if (auto st = SaveCheckpoint(ctx.out_dir() + "/final.pt", loop.modules, {}, loop.steps); !st.ok()) {
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
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"vqvae", model.ptr()}}, {});
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

absl::StatusOr<ArTransformer> LoadTeacher(JobContext& ctx, const std::string& name) {
  auto config = ReadJson(ctx.ArtifactDir(name) + "/config.json");
  if (!config.ok()) return config.status();
  ArTransformer model(TransformerOptionsFromJson(*config));
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"teacher", model.ptr()}}, {});
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

absl::StatusOr<FeatureNet> LoadFeatureNet(JobContext& ctx, const std::string& name) {
  FeatureNet model;
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"featurenet", model.ptr()}}, {});
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


TransformerOptions TransformerOptionsFromJson(const Json& c) {
  TransformerOptions o;
  o.vocab = c.at("vocab");
  o.code_dim = c.at("code_dim");
  o.width = c.at("width");
  o.layers = c.at("layers");
  o.heads = c.at("heads");
  return o;
}

Json TransformerOptionsToJson(const TransformerOptions& o) {
  return {{"vocab", o.vocab}, {"code_dim", o.code_dim}, {"width", o.width}, {"layers", o.layers}, {"heads", o.heads}};
}

SamplingConfig SamplingFromParams(const Json& p) {
  SamplingConfig s;
  s.cfg = p.value("cfg", 2.0);
  s.top_k = p.value("top_k", 0);
  s.top_p = p.value("top_p", 1.0);
  s.temperature = p.value("temperature", 1.0);
  return s;
}

}  // namespace dd2
