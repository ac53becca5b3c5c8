// The DD2 job types: `tune` (stage 1, GTS), `distill` (stage 2, CSD with K guidance updates per
// generator update) and `align` (performance alignment: generator <- EMA, guidance-only
// updates). Declared in jobs.h; parameters in common/job_types.cc.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_manifest.h"
#include "training/dd2_update.h"
#include "training/distill.h"
#include "training/job_support.h"
#include "training/jobs.h"

namespace dd2 {
namespace {

Json HeadOptionsToJson(const HeadOptions& h) {
  return {{"code_dim", h.code_dim}, {"cond_dim", h.cond_dim}, {"width", h.width}, {"depth", h.depth}};
}

HeadOptions HeadOptionsFromJson(const Json& j) {
  HeadOptions h;
  h.code_dim = j.at("code_dim");
  h.cond_dim = j.at("cond_dim");
  h.width = j.at("width");
  h.depth = j.at("depth");
  return h;
}

struct Dd2Models {
  ArDiffusion generator{nullptr}, guidance{nullptr}, ema{nullptr};
  Json config;
};

// Loads the networks of a tune job (kind "ardiffusion": both networks start from it) or of a
// distill/align job (kind "dd2").
absl::StatusOr<Dd2Models> LoadDd2Init(JobContext& ctx, const std::string& name, const torch::Device& device,
                                      int64_t checkpoint_step = 0) {
  auto config = ReadJson(ctx.ArtifactDir(name) + "/config.json");
  if (!config.ok()) return config.status();
  const TransformerOptions bo = TransformerOptionsFromJson(config->at("backbone"));
  const HeadOptions ho = HeadOptionsFromJson(config->at("head"));
  Dd2Models m{ArDiffusion(bo, ho), ArDiffusion(bo, ho), ArDiffusion(bo, ho), *config};
  for (auto* net : {&m.generator, &m.guidance, &m.ema}) (*net)->to(device);
  std::string path = ctx.ArtifactDir(name) + "/final.pt";
  if (checkpoint_step > 0) {  // a committed checkpoint, verified against its manifest
    auto manifest = ReadManifest(CheckpointPath(ctx.ArtifactDir(name) + "/checkpoints", checkpoint_step));
    if (!manifest.ok()) return manifest.status();
    if (auto st = VerifyCheckpoint(*manifest); !st.ok()) return st;
    path = manifest->path;
  }
  if (config->value("kind", "") == "ardiffusion") {
    auto st = LoadCheckpoint(path, {{"ardiffusion", m.generator.ptr()}}, {});
    if (!st.ok()) return st.status();
    CopyParameters(*m.guidance, *m.generator);
    CopyParameters(*m.ema, *m.generator);
  } else {
    auto st = LoadCheckpoint(path, {{"generator", m.generator.ptr()}, {"guidance", m.guidance.ptr()}, {"ema", m.ema.ptr()}}, {});
    if (!st.ok()) return st.status();
  }
  return m;
}

// The tokenizer and teacher named by a DD2 job's `tokenizer` and `teacher` params.
absl::StatusOr<std::pair<Tokenizer, ArTransformer>> LoadInputs(JobContext& ctx, const torch::Device& device) {
  auto tok = LoadTokenizer(ctx, ctx.params().value("tokenizer", std::string("tokenizer")), device);
  if (!tok.ok()) return tok.status();
  const std::string teacher_job = ctx.params().value("teacher", std::string("teacher"));
  auto teacher = LoadTeacher(ctx, teacher_job, device);
  if (!teacher.ok()) return teacher.status();
  if ((*teacher)->options().input == "embedding") {
    return absl::FailedPreconditionError(absl::StrCat(
        "teacher job '", teacher_job, "' reads tokens through LlamaGen's embedding table, which has no gradient and "
        "no meaning for noise: adapt it to continuous inputs first (an `adapt` job) and distil that"));
  }
  return std::make_pair(*tok, *teacher);
}

// `generator_steps`: generator updates behind this job's output, counted across the schedule
// (the progressive EMA continues from it).
absl::Status WriteDd2Config(JobContext& ctx, const Json& init_config, int64_t generator_steps) {
  Json c = {{"kind", "dd2"}, {"backbone", init_config.at("backbone")}, {"head", init_config.at("head")},
            {"generator_steps", generator_steps}};
  return WriteJson(ctx.out_dir() + "/config.json", c);
}

}  // namespace

int RunTuneJob(JobContext& ctx) {
  const Json& p = ctx.params();
  const uint64_t seed = p.value("seed", 0);
  torch::manual_seed(seed);
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return Fail(ctx, gang.status());
  Distributed& dist = **gang;
  auto inputs = LoadInputs(ctx, dist.device());
  if (!inputs.ok()) return Fail(ctx, inputs.status());
  auto& [tok, teacher] = *inputs;
  const auto codebook = tok->Codebook().detach();
  const SamplingConfig sampling = SamplingFromParams(p);
  const TransformerOptions bo = teacher->options();
  HeadOptions ho;
  ho.code_dim = bo.code_dim;
  ho.cond_dim = bo.width;
  ho.width = p.value("head_width", 128);
  ho.depth = p.value("head_depth", 2);
  ArDiffusion model(bo, ho);
  model->to(dist.device());
  CopyParameters(*model->backbone(), *teacher);
  std::filesystem::create_directories(ctx.out_dir());
  if (auto st = WriteJson(ctx.out_dir() + "/config.json", {{"kind", "ardiffusion"},
                                                           {"backbone", TransformerOptionsToJson(bo)},
                                                           {"head", HeadOptionsToJson(ho)}});
      !st.ok()) {
    return Fail(ctx, st);
  }
  // Teacher samples, the stage-1 data (same settings as evaluation).
  const int64_t pool = p.value("pool", 2000), n = bo.tokens;
  auto pool_classes = (torch::arange(pool, torch::kLong) % bo.classes).to(dist.device());
  std::vector<torch::Tensor> parts;
  auto pool_gen = MakeGenerator(seed * 31 + 5);
  for (int64_t i = 0; i < pool; i += 250) {
    parts.push_back(SampleAr(teacher, codebook, pool_classes.slice(0, i, i + 250), sampling, pool_gen));
  }
  auto pool_tokens = codebook.index_select(0, torch::cat(parts).view(-1)).view({pool, n, bo.code_dim});
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 3e-4)).betas({0.9, 0.95}));
  const int64_t head_steps = p.value("head_steps", 200), m = p.value("m", 4);
  const double t_min = p.value("t_min", 0.01), t_max = p.value("t_max", 0.99);
  const bool gts = p.value("target", std::string("gts")) == "gts";
  const int64_t global_batch = p.value("batch", 32) * dist.world_size();
  Batcher batcher(pool, global_batch, seed);
  Loop loop;
  loop.dist = &dist;
  loop.steps = p.value("steps", 600);
  loop.checkpoint_every = p.value("checkpoint_every", 200);
  loop.modules = {{"ardiffusion", model.ptr()}};
  loop.optimizers = {{"adam", &adam}};
  loop.step = [&](int64_t step) {
    auto global = batcher.Indices(step);
    auto idx = dist.Shard(global);
    auto z = pool_tokens.index_select(0, idx);
    auto classes = pool_classes.index_select(0, idx);
    torch::Tensor log_p, features;
    {
      torch::NoGradGuard no_grad;
      log_p = TeacherLogProbsFor(teacher, classes, z.slice(1, 0, n - 1), sampling);
    }
    if (step < head_steps) {  // phase 1: head only, backbone frozen
      torch::NoGradGuard no_grad;
      features = model->Features(classes, z);
    } else {
      features = model->Features(classes, z);
    }
    auto rep = [m](const torch::Tensor& x) { return torch::cat(std::vector<torch::Tensor>(m, x)); };
    auto zm = rep(z), fm = rep(features), lpm = rep(log_p);
    auto gen = MakeGenerator(seed * 7919 + static_cast<uint64_t>(step));
    auto [t, eps] = DrawNoise(dist, m, global.size(0), n, bo.code_dim, t_min, t_max, gen);
    auto x = (1 - t.unsqueeze(-1)) * zm + t.unsqueeze(-1) * eps;
    auto loss = TuneLoss(model->Velocity(x, t, fm), x, t, zm, eps, lpm, codebook, gts);
    dist.Step(adam, loss);
    return StepMetrics{{"loss", loss.detach()}, {"phase", torch::tensor(step < head_steps ? 1.0 : 2.0)}};
  };
  return RunLoop(ctx, loop);
}

// distill (guidance_only = false) and align (guidance_only = true) share the loop.
static int RunDistillOrAlign(JobContext& ctx, bool guidance_only) {
  const Json& p = ctx.params();
  const uint64_t seed = p.value("seed", 0);
  torch::manual_seed(seed);
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return Fail(ctx, gang.status());
  Distributed& dist = **gang;
  auto inputs = LoadInputs(ctx, dist.device());
  if (!inputs.ok()) return Fail(ctx, inputs.status());
  auto& [tok, teacher] = *inputs;
  const std::string init_name = p.value("init", std::string(guidance_only ? "distill" : "tune"));
  auto models = LoadDd2Init(ctx, init_name, dist.device());
  if (!models.ok()) return Fail(ctx, models.status());
  if (guidance_only) CopyParameters(*models->generator, *models->ema);  // generator <- EMA
  std::filesystem::create_directories(ctx.out_dir());
  // A schedule (distill -> align -> distill) continues one optimisation: the init job's Adam
  // moments and its generator-step count (for the EMA rate), unless carry_state is false.
  const bool carry = p.value("carry_state", true) && models->config.value("kind", "") == "dd2";
  const int64_t steps_before = carry ? models->config.value("generator_steps", int64_t{0}) : 0;
  const int64_t steps_here = guidance_only ? 0 : p.value("steps", int64_t{300});
  if (auto st = WriteDd2Config(ctx, models->config, steps_before + steps_here); !st.ok()) return Fail(ctx, st);
  ArDiffusion& g = models->generator;
  ArDiffusion& psi = models->guidance;
  Dd2UpdateOptions o;
  o.guidance_only = guidance_only;
  o.lr_g = p.value("lr", 1e-4);
  o.lr_psi = p.value("guidance_lr", 1e-4);
  torch::optim::Adam opt_g(g->parameters(), torch::optim::AdamOptions(o.lr_g).betas({0.9, 0.95}));
  torch::optim::Adam opt_psi(psi->parameters(), torch::optim::AdamOptions(o.lr_psi).betas({0.9, 0.95}));
  if (carry) {
    const std::string init_path = ctx.ArtifactDir(init_name) + "/final.pt";
    auto loaded = LoadCheckpoint(init_path, {}, {{"generator", &opt_g}, {"guidance", &opt_psi}});
    if (!loaded.ok()) {
      std::printf("carry_state: %s has no optimizer state (%s); starting Adam afresh\n", init_path.c_str(),
                  std::string(loaded.status().message()).c_str());
    }
  }
  o.k = p.value("k", 5);
  o.m = p.value("m", 4);
  o.batch = p.value("batch", 32);
  o.warmup = p.value("warmup", 0);
  o.t_min = p.value("t_min", 0.01);
  o.t_max = p.value("t_max", 0.99);
  o.ema_max = p.value("ema_max", 0.9999);
  o.steps_before = steps_before;
  o.seed = seed;
  o.device_noise = p.value("noise", std::string("cpu")) == "device";
  o.csd.alpha = p.value("alpha", 1.0);
  o.csd.normalise = p.value("omega", std::string("sid")) == "sid";
  o.sampling = SamplingFromParams(p);
  // On the CPU the job's threads each take an equal part of the batch (forward and backward on
  // one intra-op thread, gradients averaged) where they divide it: faster than LibTorch's
  // intra-op threads on these small matrices (README "Speed"). `parallel: ops` keeps those.
  const std::string parallel = p.value("parallel", std::string("batch"));
  if (parallel != "batch" && parallel != "ops") return Fail(ctx, "parallel: '" + parallel + "' (batch or ops)");
  const int threads = torch::get_num_threads();
  if (dist.device().is_cpu() && threads > 1 && parallel == "batch") {
    if (o.batch % threads == 0) {
      o.batch_threads = threads;
      torch::set_num_threads(1);
      std::printf("%d threads, each on %lld sequences of the batch\n", threads, static_cast<long long>(o.batch / threads));
    } else {
      std::printf("%d intra-op threads: they do not divide the batch of %lld\n", threads, static_cast<long long>(o.batch));
    }
  }
  Dd2Updater updater(dist, {g, psi, models->ema, teacher, tok->Codebook().detach()}, opt_g, opt_psi, o);
  Loop loop;
  loop.dist = &dist;
  loop.steps = p.value("steps", 300);
  loop.checkpoint_every = p.value("checkpoint_every", 100);
  loop.modules = {{"generator", g.ptr()}, {"guidance", psi.ptr()}, {"ema", models->ema.ptr()}};
  loop.optimizers = {{"generator", &opt_g}, {"guidance", &opt_psi}};
  loop.final_with_optimizers = true;
  loop.step = [&](int64_t step) { return updater.Step(step); };
  return RunLoop(ctx, loop);
}

int RunDistillJob(JobContext& ctx) { return RunDistillOrAlign(ctx, false); }
int RunAlignJob(JobContext& ctx) { return RunDistillOrAlign(ctx, true); }

absl::StatusOr<ArDiffusion> LoadStage1(JobContext& ctx, const std::string& name, const torch::Device& device) {
  auto m = LoadDd2Init(ctx, name, device);
  if (!m.ok()) return m.status();
  m->generator->eval();
  return m->generator;
}

absl::StatusOr<ArDiffusion> LoadDd2Generator(JobContext& ctx, const std::string& name, const torch::Device& device,
                                             int64_t checkpoint_step) {
  auto m = LoadDd2Init(ctx, name, device, checkpoint_step);
  if (!m.ok()) return m.status();
  m->ema->eval();
  return m->ema;  // sampling uses the EMA weights
}

}  // namespace dd2
