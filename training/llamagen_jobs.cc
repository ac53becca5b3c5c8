// Job types that bring a LlamaGen teacher into dd2 (jobs.h lists them):
//  - import_tokenizer: LlamaGen's VQ .pt file -> a tokenizer artifact (config.json "kind":
//    "llamagen_vq", final.pt) that the other jobs load by job name like a trained one.
//  - import_teacher: LlamaGen's c2i GPT .pt file -> a teacher artifact (input "embedding",
//    snapping to the tokenizer job's codebook), for evals with the teacher sampler.
//  - adapt: the continuous-input adaptation (paper App. E.4, dd2-method §5.1) of such a
//    teacher: an MLP on codebook vectors replaces the token table, fitted to it first, then the
//    whole model is fine-tuned with the AR cross-entropy; its output is a teacher that tune,
//    distill and eval take like any other.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "training/data.h"
#include "training/eval.h"
#include "training/job_support.h"
#include "training/jobs.h"
#include "training/llamagen.h"

namespace dd2 {
namespace {

int64_t CountParameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

int RunImportTokenizerJob(JobContext& ctx) {
  const Json& p = ctx.params();
  auto device = PlaceJob(ctx);
  if (!device.ok()) return Fail(ctx, device.status());
  const std::string file = p.value("file", std::string());
  std::printf("reading %s\n", file.c_str());
  auto state = ReadTorchStateDict(file);
  if (!state.ok()) return Fail(ctx, state.status());
  auto options = LlamaGenVqOptionsFromStateDict(file, *state);
  if (!options.ok()) return Fail(ctx, options.status());
  LlamaGenVq vq(*options);
  if (auto st = LoadStateDict(file, *state, *vq, {"quantize.codebook_used"}); !st.ok()) return Fail(ctx, st);
  if (auto st = WriteModelArtifacts(ctx, LlamaGenVqOptionsToJson(*options), {{"llamagen_vq", vq.ptr()}}); !st.ok()) {
    return Fail(ctx, st);
  }
  std::printf("LlamaGen VQ: codebook %ld x %ld, ch %ld, %zu levels, z %ld\n", options->codebook_size,
              options->code_dim, options->channels, options->channel_mult.size(), options->z_channels);
  ReportFinal(ctx, {{"parameters", static_cast<double>(CountParameters(*vq))},
                    {"codebook_size", static_cast<double>(options->codebook_size)},
                    {"code_dim", static_cast<double>(options->code_dim)}},
              1);
  return 0;
}

int RunImportTeacherJob(JobContext& ctx) {
  const Json& p = ctx.params();
  auto device = PlaceJob(ctx);
  if (!device.ok()) return Fail(ctx, device.status());
  const std::string tokenizer_job = p.value("tokenizer", std::string("tokenizer"));
  auto tok = LoadTokenizer(ctx, tokenizer_job, torch::kCPU);
  if (!tok.ok()) return Fail(ctx, tok.status());
  const torch::Tensor codebook = (*tok)->Codebook().detach();
  const std::string file = p.value("file", std::string());
  std::printf("reading %s\n", file.c_str());
  auto state = ReadTorchStateDict(file);
  if (!state.ok()) return Fail(ctx, state.status());
  TransformerOptions given;
  const std::string preset = p.value("preset", std::string());
  if (!preset.empty()) {
    auto named = LlamaGenPreset(preset);
    if (!named.ok()) return Fail(ctx, named.status());
    given = *named;
  }
  if (p.value("heads", 0) > 0) given.heads = p.value("heads", 0);
  if (p.value("tokens", 0) > 0) given.tokens = p.value("tokens", 0);
  if (preset.empty() && p.value("heads", 0) == 0) {
    return Fail(ctx, "import_teacher: give `preset` (B, L, XL, XXL, XXXL) or `heads`: a state dict does not say it");
  }
  given.code_dim = codebook.size(1);
  auto options = LlamaGenOptionsFromStateDict(file, *state, given);
  if (!options.ok()) return Fail(ctx, options.status());
  if (!preset.empty() && (options->width != given.width || options->layers != given.layers)) {
    return Fail(ctx, absl::StrCat(file, " holds a GPT of width ", options->width, " and ", options->layers,
                                  " layers, not preset ", preset, "'s ", given.width, " and ", given.layers));
  }
  if (options->vocab != codebook.size(0)) {
    return Fail(ctx, absl::StrCat(file, " predicts ", options->vocab, " tokens, tokenizer job '", tokenizer_job,
                                  "' has ", codebook.size(0), " codes"));
  }
  LlamaGenTransformer gpt(*options);
  if (auto st = LoadStateDict(file, *state, *gpt, {"freqs_cis"}); !st.ok()) return Fail(ctx, st);
  gpt->SetCodebook(codebook);
  if (auto st = WriteModelArtifacts(ctx, TransformerOptionsToJson(gpt->options()), {{"teacher", gpt.ptr()}}); !st.ok()) {
    return Fail(ctx, st);
  }
  const TransformerOptions& o = gpt->options();
  std::printf("LlamaGen GPT: width %ld, %ld layers, %ld heads (%ld key/value), FFN %ld, vocab %ld, %ld classes, %ld tokens\n",
              o.width, o.layers, o.heads, o.kv_heads, o.ffn_hidden, o.vocab, o.classes, o.tokens);
  ReportFinal(ctx, {{"parameters", static_cast<double>(CountParameters(*gpt))}}, 1);
  return 0;
}

int RunAdaptJob(JobContext& ctx) {
  const Json& p = ctx.params();
  const uint64_t seed = p.value("seed", 0);
  torch::manual_seed(seed);
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return Fail(ctx, gang.status());
  Distributed& dist = **gang;
  const std::string teacher_job = p.value("teacher", std::string("teacher"));
  auto tok = LoadTokenizer(ctx, p.value("tokenizer", std::string("tokenizer")), dist.device());
  if (!tok.ok()) return Fail(ctx, tok.status());
  auto loaded = LoadTeacher(ctx, teacher_job, dist.device());
  if (!loaded.ok()) return Fail(ctx, loaded.status());
  auto teacher = std::dynamic_pointer_cast<LlamaGenTransformerImpl>(loaded->ptr());
  if (!teacher || teacher->options().input != "embedding") {
    return Fail(ctx, absl::StrCat("adapt: teacher job '", teacher_job,
                                  "' is not a LlamaGen teacher with its token table (an import_teacher job)"));
  }
  const torch::Tensor codebook = (*tok)->Codebook().detach();
  const TransformerOptions& to = teacher->options();
  // Token sequences: the teacher's own samples (with the eval's CFG and filtering), or the
  // tokenized Fashion-MNIST images when the tokenizer is Fashion-MNIST's.
  const std::string source = p.value("data", std::string("teacher"));
  const int64_t pool = p.value("pool", 1000), heldout = p.value("heldout", 200);
  torch::Tensor codes, classes;
  {
    torch::NoGradGuard no_grad;
    if (source == "teacher") {
      const SamplingConfig sampling = SamplingFromParams(p);
      classes = (torch::arange(pool + heldout, torch::kLong) % to.classes).to(dist.device());
      std::vector<torch::Tensor> parts;
      auto gen = MakeGenerator(seed * 31 + 7);
      for (int64_t i = 0; i < pool + heldout; i += 250) {
        parts.push_back(SampleAr(*loaded, codebook, classes.slice(0, i, i + 250), sampling, gen));
      }
      codes = torch::cat(parts);
    } else {
      if (!(*tok)->fashion_mnist()) return Fail(ctx, "adapt: data fashion_mnist needs a Fashion-MNIST tokenizer");
      auto train = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "train", pool);
      if (!train.ok()) return Fail(ctx, train.status());
      auto test = LoadFashionMnist(p.value("data_dir", std::string(kFashionMnistDir)), "test", heldout);
      if (!test.ok()) return Fail(ctx, test.status());
      codes = Tokenize(**tok, torch::cat({train->images, test->images}).to(dist.device()));
      classes = torch::cat({train->labels, test->labels}).to(dist.device());
    }
  }
  const int64_t n_train = codes.size(0) - heldout;
  auto heldout_codes = codes.slice(0, n_train), heldout_classes = classes.slice(0, n_train);
  const double nll_teacher = TeacherNll(*loaded, codebook, heldout_classes, heldout_codes);

  TransformerOptions ao = to;
  ao.input = "mlp";
  ao.input_hidden = p.value("hidden", 0);
  LlamaGenTransformer adapted(ao);
  adapted->to(dist.device());
  TensorDict weights;  // everything but the token table, which the MLP replaces
  for (const auto& q : teacher->named_parameters()) weights[q.key()] = q.value();
  if (auto st = LoadStateDict("teacher job " + teacher_job, weights, *adapted, {"tok_embeddings.weight"}); !st.ok()) {
    return Fail(ctx, st);
  }
  std::vector<torch::Tensor> mlp_params;
  for (auto& q : adapted->named_parameters()) {
    if (q.key().rfind("dd2_token_in", 0) == 0) mlp_params.push_back(q.value());
  }
  const torch::Tensor table = teacher->named_parameters()["tok_embeddings.weight"].detach();
  ArTransformer adapted_teacher(adapted.ptr());
  torch::optim::Adam fit(mlp_params, torch::optim::AdamOptions(p.value("fit_lr", 3e-3)));
  torch::optim::Adam adam(adapted->parameters(), torch::optim::AdamOptions(p.value("lr", 1e-4)).betas({0.9, 0.95}));
  const int64_t fit_steps = p.value("fit_steps", 2000);
  const double dropout = p.value("label_dropout", 0.1);
  Batcher batcher(n_train, p.value("batch", 32) * dist.world_size(), seed);
  const std::string fit_json = ctx.out_dir() + "/fit.json";  // kept for a resumed attempt's final metrics
  auto measure_fit = [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    const double error = ((adapted->EmbedVectors(codebook) - table).norm() / table.norm()).item<double>();
    const double nll = TeacherNll(adapted_teacher, codebook, heldout_classes, heldout_codes);
    std::printf("embedding fit: relative error %.4f, held-out NLL %.4f (the teacher's %.4f)\n", error, nll, nll_teacher);
    return dist.is_chief() ? WriteJson(fit_json, {{"embedding_fit_error", error}, {"nll_after_fit", nll}})
                           : absl::OkStatus();
  };
  absl::Status fit_status;
  Loop loop;
  loop.dist = &dist;
  loop.steps = fit_steps + p.value("steps", 200);
  loop.checkpoint_every = p.value("checkpoint_every", 200);
  loop.modules = {{"teacher", adapted.ptr()}};
  loop.optimizers = {{"fit", &fit}, {"adam", &adam}};
  loop.step = [&](int64_t step) {
    if (step < fit_steps) {  // the MLP alone: mean ||mlp(c_i) - emb(i)||^2 over the codebook
      auto loss = (adapted->EmbedVectors(codebook) - table).pow(2).sum(-1).mean();
      dist.Step(fit, loss);
      if (step + 1 == fit_steps) fit_status = measure_fit();
      return StepMetrics{{"fit_loss", loss.detach()}};
    }
    auto global = batcher.Indices(step - fit_steps);
    auto idx = dist.Shard(global);
    auto cls = DropLabels(dist, classes.index_select(0, idx), global.size(0), seed, step, dropout, to.classes);
    auto loss = ArCrossEntropy(*adapted, codebook, codes.index_select(0, idx), cls);
    dist.Step(adam, loss);
    return StepMetrics{{"loss", loss.detach()}};
  };
  std::filesystem::create_directories(ctx.out_dir());
  if (auto st = WriteJson(ctx.out_dir() + "/config.json", TransformerOptionsToJson(adapted->options())); !st.ok()) {
    return Fail(ctx, st);
  }
  if (int code = RunLoop(ctx, loop); code != 0) return code;
  if (!fit_status.ok()) return Fail(ctx, fit_status);
  if (!dist.is_chief()) return 0;  // rank 0 wrote fit.json and reports
  adapted->eval();
  auto fitted = ReadJson(fit_json);
  if (!fitted.ok()) return Fail(ctx, fitted.status());
  const double nll_adapted = TeacherNll(adapted_teacher, codebook, heldout_classes, heldout_codes);
  std::printf("held-out NLL: teacher %.4f, after the embedding fit %.4f, adapted %.4f\n", nll_teacher,
              fitted->value("nll_after_fit", 0.0), nll_adapted);
  ReportFinal(ctx, {{"embedding_fit_error", fitted->value("embedding_fit_error", 0.0)}, {"nll_teacher", nll_teacher},
                    {"nll_after_fit", fitted->value("nll_after_fit", 0.0)}, {"nll_adapted", nll_adapted}},
              loop.steps);
  return 0;
}

}  // namespace dd2
