#include "training/jobs.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/home.h"
#include "training/checkpoint.h"
#include "training/job_support.h"
#include "training/data.h"
#include "training/eval.h"
#include "training/metrics.h"
#include "training/models.h"

namespace dd2 {
int RunTokenizerJob(JobContext& ctx) {
  const Json& p = ctx.params();
  torch::manual_seed(p.value("seed", 0));
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return Fail(ctx, gang.status());
  Distributed& dist = **gang;
  auto data = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "train", p.value("train_limit", 0));
  if (!data.ok()) return Fail(ctx, data.status());
  data->images = data->images.to(dist.device());
  VqVaeOptions opts = TokenizerOptions(p);
  VqVae model(opts);
  model->to(dist.device());
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 1e-3)));
  std::filesystem::create_directories(ctx.out_dir());
  if (auto st = WriteJson(ctx.out_dir() + "/config.json", Json{{"codebook_size", opts.codebook_size},
                                                               {"code_dim", opts.code_dim},
                                                               {"channels", opts.channels},
                                                               {"grid", opts.grid}});
      !st.ok()) {
    return Fail(ctx, st);
  }
  const uint64_t seed = p.value("seed", 0);
  const int64_t restart_every = p.value("restart_every", 50);
  const int64_t restart_until = static_cast<int64_t>(p.value("steps", 1000) * 0.8);  // settle at the end
  int64_t restarted = 0;
  Batcher batcher(data->images.size(0), p.value("batch", 64) * dist.world_size(), seed);
  Loop loop;
  loop.dist = &dist;
  loop.steps = p.value("steps", 1000);
  loop.checkpoint_every = p.value("checkpoint_every", 200);
  loop.modules = {{"vqvae", model.ptr()}};
  loop.optimizers = {{"adam", &adam}};
  loop.step = [&](int64_t step) {
    auto x = data->images.index_select(0, dist.Shard(batcher.Indices(step)));
    auto out = model->forward(x);
    auto recon = torch::mse_loss(out.reconstruction, x);
    auto loss = recon + out.vq_loss;
    dist.Step(adam, loss);
    auto gen = MakeGenerator(seed * 7919 + static_cast<uint64_t>(step));
    const bool window_end = restart_every > 0 && (step + 1) % restart_every == 0 && step + 1 < restart_until;
    restarted += model->TrackAndRestart(out.indices, model->Encode(x), window_end, gen);
    if (window_end) dist.Broadcast(*model);  // rank 0's restarts win
    return StepMetrics{{"recon_mse", recon.detach()}, {"vq_loss", out.vq_loss.detach()},
                       {"codes_restarted", torch::tensor(static_cast<double>(restarted))}};
  };
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  // Held-out reconstruction and codebook usage.
  auto test = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "test", 2000);
  if (!test.ok()) return Fail(ctx, test.status());
  test->images = test->images.to(dist.device());
  torch::NoGradGuard no_grad;
  model->eval();
  auto idx = Tokenize(*model, test->images);
  auto recon = model->Decode(model->Codebook().index_select(0, idx.view(-1)).view({idx.size(0), idx.size(1), opts.code_dim}));
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
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return Fail(ctx, gang.status());
  Distributed& dist = **gang;
  auto tok = LoadTokenizer(ctx, p.value("tokenizer", std::string("tokenizer")), dist.device());
  if (!tok.ok()) return Fail(ctx, tok.status());
  const std::string data_dir = p.value("data_dir", std::string(kFashionMnistDir));
  auto data = LoadFashionMnist(data_dir, "train", p.value("train_limit", 0));
  if (!data.ok()) return Fail(ctx, data.status());
  data->labels = data->labels.to(dist.device());
  auto vq = std::dynamic_pointer_cast<VqVaeImpl>(tok->ptr());
  if (!vq) return Fail(ctx, "teacher: its tokenizer job is not a Fashion-MNIST tokenizer (type tokenizer)");
  auto tokens = Tokenize(**tok, data->images.to(dist.device()));
  auto codebook = (*tok)->Codebook().detach();
  TransformerOptions opts = TeacherOptions(p, vq->options());
  std::filesystem::create_directories(ctx.out_dir());
  if (auto st = ValidateTransformerOptions(opts); !st.ok()) return Fail(ctx, st);
  if (auto st = WriteJson(ctx.out_dir() + "/config.json", TransformerOptionsToJson(opts)); !st.ok()) {
    return Fail(ctx, st);
  }
  ArTransformer model(opts);
  model->to(dist.device());
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 3e-4)).betas({0.9, 0.95}));
  const double dropout = p.value("label_dropout", 0.1);
  const uint64_t seed = p.value("seed", 0);
  Batcher batcher(tokens.size(0), p.value("batch", 64) * dist.world_size(), seed);
  Loop loop;
  loop.dist = &dist;
  loop.steps = p.value("steps", 1000);
  loop.checkpoint_every = p.value("checkpoint_every", 200);
  loop.modules = {{"teacher", model.ptr()}};
  loop.optimizers = {{"adam", &adam}};
  loop.step = [&](int64_t step) {
    auto global = batcher.Indices(step);
    auto idx = dist.Shard(global);
    auto classes = DropLabels(dist, data->labels.index_select(0, idx), global.size(0), seed, step, dropout, opts.classes);
    auto loss = ArCrossEntropy(*model, codebook, tokens.index_select(0, idx), classes);
    dist.Step(adam, loss);
    return StepMetrics{{"loss", loss.detach()}};
  };
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  auto test = LoadFashionMnist(data_dir, "test", 2000);
  if (!test.ok()) return Fail(ctx, test.status());
  torch::NoGradGuard no_grad;
  model->eval();
  auto test_tokens = Tokenize(**tok, test->images.to(dist.device()));
  ReportFinal(ctx, {{"test_nll", TeacherNll(model, codebook, test->labels.to(dist.device()), test_tokens)}},
              loop.steps);
  return 0;
}

int RunFeatureNetJob(JobContext& ctx) {
  const Json& p = ctx.params();
  torch::manual_seed(p.value("seed", 0));
  const std::string data_dir = p.value("data_dir", std::string(kFashionMnistDir));
  auto data = LoadFashionMnist(data_dir, "train", p.value("train_limit", 0));
  if (!data.ok()) return Fail(ctx, data.status());
  std::filesystem::create_directories(ctx.out_dir());
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return Fail(ctx, gang.status());
  Distributed& dist = **gang;
  data->images = data->images.to(dist.device());
  data->labels = data->labels.to(dist.device());
  FeatureNet model;
  model->to(dist.device());
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(p.value("lr", 1e-3)));
  Batcher batcher(data->images.size(0), p.value("batch", 128) * dist.world_size(), p.value("seed", 0));
  Loop loop;
  loop.dist = &dist;
  loop.steps = p.value("steps", 1500);
  loop.checkpoint_every = p.value("checkpoint_every", 500);
  loop.modules = {{"featurenet", model.ptr()}};
  loop.optimizers = {{"adam", &adam}};
  const double lr = p.value("lr", 1e-3);
  loop.step = [&](int64_t step) {
    // Linear decay to 10% of the initial rate; a function of the step, so resume stays exact.
    for (auto& group : adam.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr * (1.0 - 0.9 * step / loop.steps));
    }
    auto idx = dist.Shard(batcher.Indices(step));
    auto logits = model->forward(data->images.index_select(0, idx));
    auto loss = torch::cross_entropy_loss(logits, data->labels.index_select(0, idx));
    dist.Step(adam, loss);
    return StepMetrics{{"loss", loss.detach()}};
  };
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  auto test = LoadFashionMnist(data_dir, "test");
  if (!test.ok()) return Fail(ctx, test.status());
  torch::NoGradGuard no_grad;
  model->eval();
  auto correct = model->forward(test->images.to(dist.device())).argmax(1).eq(test->labels.to(dist.device()))
                     .to(torch::kFloat64).mean();
  ReportFinal(ctx, {{"test_accuracy", correct.item<double>()}}, loop.steps);
  return 0;
}

int RunEvalJob(JobContext& ctx) {
  const Json& p = ctx.params();
  auto device = PlaceJob(ctx);
  if (!device.ok()) return Fail(ctx, device.status());
  std::printf("sampling on %s\n", device->str().c_str());
  auto tok = LoadTokenizer(ctx, p.value("tokenizer", std::string("tokenizer")), *device);
  if (!tok.ok()) return Fail(ctx, tok.status());
  auto teacher = LoadTeacher(ctx, p.value("teacher", std::string("teacher")), *device);
  if (!teacher.ok()) return Fail(ctx, teacher.status());
  // The feature network scores Fashion-MNIST samples only; an imported tokenizer's get none.
  std::optional<FeatureNet> features;
  std::optional<ImageSet> test;
  if ((*tok)->fashion_mnist()) {
    auto f = LoadFeatureNet(ctx, p.value("featurenet", std::string("featurenet")), *device);
    if (!f.ok()) return Fail(ctx, f.status());
    features = *f;
    auto t = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "test");
    if (!t.ok()) return Fail(ctx, t.status());
    test = std::move(*t);
  }
  const SamplingConfig sampling = SamplingFromParams(p);
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
  } else if (kind == "dd2" || kind == "dd2_multistep") {
    auto generator = LoadDd2Generator(ctx, p.value("generator", std::string("distill")), *device,
                                      p.value("checkpoint_step", 0));
    if (!generator.ok()) return Fail(ctx, generator.status());
    if (kind == "dd2") {
      sampler = MakeOneStepSampler(*generator, (*teacher)->options().code_dim);
    } else {
      sampler = MakeMultiStepSampler(*generator, *teacher, (*tok)->Codebook().detach(), sampling,
                                     p.value("multistep_k", 2), p.value("snap", false));
    }
  } else if (kind == "stage1") {
    auto stage1 = LoadStage1(ctx, p.value("stage1", std::string("tune")), *device);
    if (!stage1.ok()) return Fail(ctx, stage1.status());
    sampler = MakeEulerSampler(*stage1, p.value("euler_steps", 10), (*tok)->Codebook().detach(), p.value("snap", false));
  } else {
    return Fail(ctx, absl::StrCat("unknown sampler '", kind, "'"));
  }
  std::unique_ptr<TokenSampler> teacher_sampler;  // the reference for the speed-ups (the sampler itself for kind teacher)
  if (kind != "teacher") teacher_sampler = MakeTeacherSampler(*teacher, (*tok)->Codebook().detach(), sampling);
  auto result = Evaluate(*sampler, kind == "teacher" ? sampler.get() : teacher_sampler.get(), *tok,
                         features ? &*features : nullptr, test ? &*test : nullptr, options, &*teacher);
  if (!result.ok()) return Fail(ctx, result.status());
  ReportFinal(ctx, *result, 1);
  std::printf("sample grid: %s\n", options.grid_path.c_str());
  return 0;
}

void RegisterTrainingJobTypes() {
  RegisterJobType("tokenizer", RunTokenizerJob);
  RegisterJobType("teacher", RunTeacherJob);
  RegisterJobType("featurenet", RunFeatureNetJob);
  RegisterJobType("eval", RunEvalJob);
  RegisterJobType("tune", RunTuneJob);
  RegisterJobType("distill", RunDistillJob);
  RegisterJobType("align", RunAlignJob);
  RegisterJobType("import_tokenizer", RunImportTokenizerJob);
  RegisterJobType("import_teacher", RunImportTeacherJob);
  RegisterJobType("adapt", RunAdaptJob);
}

}  // namespace dd2
