#include "training/job_support.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint_manifest.h"
#include "common/fault_point.h"
#include "common/home.h"

namespace dd2 {

int Fail(JobContext& ctx, const std::string& what) {
  std::fprintf(stderr, "dd2 job: %s\n", what.c_str());
  ctx.ReportEvent("cause", {{"cause", what.substr(0, 500)}});
  return 1;
}

int Fail(JobContext& ctx, const absl::Status& st) { return Fail(ctx, std::string(st.message())); }

absl::StatusOr<torch::Device> PlaceJob(const JobContext& ctx) {
  int threads = ctx.params().value("threads", 0);
  if (threads <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    threads = env != nullptr ? std::atoi(env) : 0;
  }
  torch::set_num_threads(std::max(threads, 1));
  const std::string param = ctx.params().value("device", std::string("auto"));
  const std::string& worker = ctx.gang().device;  // cpu, cuda:N or auto
  const bool cuda = torch::cuda::is_available();
  std::string want = param == "auto" ? worker : param;
  if (want == "auto") want = cuda ? "cuda" : "cpu";
  if (want == "cpu") return torch::Device(torch::kCPU);
  if (want == "cuda" && absl::StartsWith(worker, "cuda:")) want = worker;  // the worker's GPU
  try {
    torch::Device device(want);
    if (device.is_cuda() && !cuda) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", want, " asked for (job param device: ", param, ", worker device: ", worker,
          "), but this LibTorch has no CUDA or sees no GPU; use device: cpu"));
    }
    if (device.is_cuda() && device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", want, " asked for, but only ", torch::cuda::device_count(), " GPU(s) are visible"));
    }
    return device.is_cuda() && !device.has_index() ? torch::Device(torch::kCUDA, 0) : device;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("device '", want, "' is not cpu, cuda or cuda:N"));
  }
}

absl::StatusOr<std::unique_ptr<Distributed>> JoinGang(JobContext& ctx) {
  auto device = PlaceJob(ctx);
  if (!device.ok()) return device.status();
  DistributedOptions o;
  o.device = *device;
  o.rank = ctx.gang().rank;
  o.world_size = ctx.gang().world_size;
  o.rendezvous = ctx.gang().rendezvous;
  o.host = ctx.gang().host;
  o.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(1000 * ctx.params().value("collective_timeout_s", 300.0)));
  return Distributed::Create(o);
}

namespace {

// Rank 0: writes the checkpoint of `step`, commits its manifest and reports it.
absl::Status CommitStep(JobContext& ctx, Loop& loop, int64_t step, const Metrics& metrics) {
  const std::string path = CheckpointPath(ctx.out_dir() + "/checkpoints", step);
  if (auto st = SaveCheckpoint(path, loop.modules, loop.optimizers, step); !st.ok()) return st;
  FaultPoint("checkpoint_write", path);
  auto manifest = CommitCheckpoint(path, step, ctx.attempt_id());
  if (!manifest.ok()) return manifest.status();
  ctx.ReportEvent("checkpoint", {{"step", step}, {"path", manifest->path}, {"sha256", manifest->sha256},
                                 {"bytes", manifest->bytes}, {"metrics", metrics}});
  return absl::OkStatus();
}

// The step's metrics read from wherever they live, plus `extra` (the loop's own, such as steps_per_s).
Metrics Read(const StepMetrics& step_metrics, const Metrics& extra = {}) {
  Metrics m = extra;
  for (const auto& [name, value] : step_metrics) m[name] = value.item<double>();
  return m;
}

}  // namespace

int RunLoop(JobContext& ctx, Loop& loop) {
  Distributed& dist = *loop.dist;
  for (auto& [name, module] : loop.modules) dist.Broadcast(*module);
  int64_t start = 0;
  for (const auto& manifest : ListCheckpoints(ctx.out_dir() + "/checkpoints")) {
    absl::Status ok = VerifyCheckpoint(manifest);
    if (ok.ok()) {
      auto resumed = LoadCheckpoint(manifest.path, loop.modules, loop.optimizers);
      if (resumed.ok()) {
        start = *resumed;
        std::printf("resumed from %s at step %lld\n", manifest.path.c_str(), static_cast<long long>(start));
        if (dist.is_chief()) ctx.ReportEvent("resumed", {{"step", start}});
        break;
      }
      ok = resumed.status();
    }
    std::printf("checkpoint of step %lld rejected: %s\n", static_cast<long long>(manifest.step),
                std::string(ok.message()).c_str());
  }
  std::printf("training on %s (collectives: %s, %d rank(s), %d intra-op thread(s))\n", dist.device().str().c_str(),
              dist.backend().c_str(), dist.world_size(), static_cast<int>(torch::get_num_threads()));
  const auto t0 = std::chrono::steady_clock::now();
  StepMetrics last;
  Metrics rates;  // steps_per_s (and all-reduce ms) as of the last progress line
  int64_t since_report = 0;
  for (int64_t step = start; step < loop.steps; ++step) {
    if (dist.AnyStop(ctx.StopRequested())) {
      absl::Status st = dist.is_chief() ? CommitStep(ctx, loop, step, Read(last, rates)) : absl::OkStatus();
      dist.AnyStop(true);  // a barrier: no rank exits before the checkpoint is committed
      std::printf("stop requested: checkpointed at step %lld (%s)\n", static_cast<long long>(step),
                  st.ok() ? "ok" : std::string(st.message()).c_str());
      std::fflush(stdout);
      return kStoppedExitCode;
    }
    last = loop.step(step);
    ++since_report;
    const int64_t done = step + 1;
    if (done % loop.report_every == 0 || done == loop.steps) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rates["steps_per_s"] = static_cast<double>(done - start) / std::max(secs, 1e-9);
      if (dist.world_size() > 1) rates["allreduce_ms_per_step"] = dist.TakeAllReduceMs() / static_cast<double>(since_report);
      since_report = 0;
      const Metrics report = Read(last, rates);
      if (dist.is_chief()) ctx.ReportProgress(static_cast<uint64_t>(done), static_cast<uint64_t>(loop.steps), report);
      std::string line;
      for (const auto& [k, v] : report) absl::StrAppend(&line, " ", k, "=", v);
      std::printf("step %lld/%lld%s\n", static_cast<long long>(done), static_cast<long long>(loop.steps), line.c_str());
      std::fflush(stdout);
    }
    if (dist.is_chief() && loop.checkpoint_every > 0 && done % loop.checkpoint_every == 0 && done < loop.steps) {
      if (auto st = CommitStep(ctx, loop, done, Read(last, rates)); !st.ok()) return Fail(ctx, st);
    }
  }
  if (dist.is_chief()) {
    const NamedOptimizers none;
    if (auto st = SaveCheckpoint(ctx.out_dir() + "/final.pt", loop.modules,
                                 loop.final_with_optimizers ? loop.optimizers : none, loop.steps);
        !st.ok()) {
      return Fail(ctx, st);
    }
  }
  return 0;
}

absl::Status WriteJson(const std::string& path, const Json& j) { return WriteFileAtomic(path, j.dump(2) + "\n"); }

absl::Status WriteModelArtifacts(JobContext& ctx, const Json& config, const NamedModules& modules) {
  std::error_code ec;
  std::filesystem::create_directories(ctx.out_dir(), ec);
  if (auto st = WriteJson(ctx.out_dir() + "/config.json", config); !st.ok()) return st;
  return SaveCheckpoint(ctx.out_dir() + "/final.pt", modules, {}, 0);
}

absl::StatusOr<Json> ReadJson(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(path, ": missing (did the upstream job succeed?)"));
  Json j = Json::parse(*text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not JSON"));
  return j;
}

// Final metrics, reported at `step` (the job's last step) and written to metrics.json.
void ReportFinal(JobContext& ctx, const Metrics& m, int64_t step) {
  if (ctx.gang().rank != 0) return;  // rank 0 speaks for the gang
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
  o.grid = p.value("grid", o.grid);
  return o;
}

TransformerOptions TeacherOptions(const Json& p, const VqVaeOptions& tok) {
  TransformerOptions o;
  o.vocab = tok.codebook_size;
  o.code_dim = tok.code_dim;
  o.tokens = tok.tokens();
  o.width = p.value("width", o.width);
  o.layers = p.value("layers", o.layers);
  o.heads = p.value("heads", o.heads);
  o.arch = p.value("arch", o.arch);
  o.kv_heads = p.value("kv_heads", o.kv_heads);
  return o;
}

// Loads a trained or imported tokenizer from the artifacts of job `name`.
absl::StatusOr<Tokenizer> LoadTokenizer(JobContext& ctx, const std::string& name, const torch::Device& device) {
  auto config = ReadJson(ctx.ArtifactDir(name) + "/config.json");
  if (!config.ok()) return config.status();
  Tokenizer model(nullptr);
  std::string module = "vqvae";
  if (config->value("kind", std::string()) == "llamagen_vq") {
    model = Tokenizer(LlamaGenVq(LlamaGenVqOptionsFromJson(*config)).ptr());
    module = "llamagen_vq";
  } else {
    model = Tokenizer(VqVae(TokenizerOptions(*config)).ptr());
  }
  model->to(device);
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{module, model.ptr()}}, {});
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

LlamaGenVqOptions LlamaGenVqOptionsFromJson(const Json& c) {
  LlamaGenVqOptions o;
  o.channels = c.at("channels");
  o.channel_mult = c.at("channel_mult").get<std::vector<int64_t>>();
  o.res_blocks = c.at("res_blocks");
  o.z_channels = c.at("z_channels");
  o.codebook_size = c.at("codebook_size");
  o.code_dim = c.at("code_dim");
  return o;
}

Json LlamaGenVqOptionsToJson(const LlamaGenVqOptions& o) {
  return {{"kind", "llamagen_vq"},      {"channels", o.channels},   {"channel_mult", o.channel_mult},
          {"res_blocks", o.res_blocks}, {"z_channels", o.z_channels}, {"codebook_size", o.codebook_size},
          {"code_dim", o.code_dim}};
}

absl::StatusOr<ArTransformer> LoadTeacher(JobContext& ctx, const std::string& name, const torch::Device& device) {
  auto config = ReadJson(ctx.ArtifactDir(name) + "/config.json");
  if (!config.ok()) return config.status();
  ArTransformer model(TransformerOptionsFromJson(*config));
  model->to(device);
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"teacher", model.ptr()}}, {});
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

absl::StatusOr<FeatureNet> LoadFeatureNet(JobContext& ctx, const std::string& name, const torch::Device& device) {
  FeatureNet model;
  model->to(device);
  auto st = LoadCheckpoint(ctx.ArtifactDir(name) + "/final.pt", {{"featurenet", model.ptr()}}, {});
  if (!st.ok()) return st.status();
  model->eval();
  return model;
}

torch::Tensor Tokenize(TokenizerImpl& tok, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += 1000) {
    out.push_back(tok.Quantize(tok.Encode(images.slice(0, i, i + 1000))));
  }
  return torch::cat(out);
}


TransformerOptions TransformerOptionsFromJson(const Json& c) {
  TransformerOptions o;
  o.vocab = c.at("vocab");
  o.code_dim = c.at("code_dim");
  o.tokens = c.value("tokens", o.tokens);  // artifacts written before the 16x16 grid: 49
  o.width = c.at("width");
  o.layers = c.at("layers");
  o.heads = c.at("heads");
  // Artifacts written before the LlamaGen architecture: dd2's, 10 classes.
  o.classes = c.value("classes", o.classes);
  o.arch = c.value("arch", o.arch);
  o.kv_heads = c.value("kv_heads", o.kv_heads);
  o.ffn_hidden = c.value("ffn_hidden", o.ffn_hidden);
  o.norm_eps = c.value("norm_eps", o.norm_eps);
  o.rope_base = c.value("rope_base", o.rope_base);
  o.input = c.value("input", o.input);
  o.input_hidden = c.value("input_hidden", o.input_hidden);
  return o;
}

Json TransformerOptionsToJson(const TransformerOptions& o) {
  Json j = {{"arch", o.arch},     {"vocab", o.vocab},   {"code_dim", o.code_dim}, {"tokens", o.tokens},
            {"classes", o.classes}, {"width", o.width},   {"layers", o.layers},     {"heads", o.heads}};
  if (o.arch == "llamagen") {
    j.update({{"kv_heads", o.kv_heads}, {"ffn_hidden", o.ffn_hidden}, {"norm_eps", o.norm_eps},
              {"rope_base", o.rope_base}, {"input", o.input}, {"input_hidden", o.input_hidden}});
  }
  return j;
}

torch::Tensor DropLabels(Distributed& dist, const torch::Tensor& classes, int64_t global_batch, uint64_t seed,
                         int64_t step, double rate, int64_t null_class) {
  auto gen = MakeGenerator(seed * 7919 + static_cast<uint64_t>(step));
  return classes.masked_fill(dist.Shard(torch::rand({global_batch}, gen)) < rate, null_class);
}

torch::Tensor ArCrossEntropy(ArTransformerImpl& model, const torch::Tensor& codebook, const torch::Tensor& codes,
                             const torch::Tensor& classes) {
  const int64_t b = codes.size(0), n = codes.size(1);
  auto prefix = codebook.index_select(0, codes.slice(1, 0, n - 1).reshape(-1)).view({b, n - 1, codebook.size(1)});
  auto logits = model.forward(classes, prefix);
  return torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), codes.reshape(-1));
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
