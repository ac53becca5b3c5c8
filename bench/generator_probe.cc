// generator_probe: what a DD2 run's backbone features carry about the class and about where a
// position is, read with noise prefixes (what the one-step generator reads). For the stage-1
// model (the generator's start, job `tune`) and the distilled generator (job `distill`, its EMA
// weights, which evals sample) of one run, prints a Markdown table row each:
//  - class change: |f(c) - f(c')| / spread of f over the noise, per position (the same noise, c'
//    another class), averaged over four bands of positions 1 .. n-1;
//  - row R², column R²: held-out R² of a least-squares fit from the features to the row and the
//    column of the token each position produces (fit on half the sequences, scored on the rest);
//  - teacher class KL: KL(p(. | c, z) || p(. | c', z)) of the run's teacher (with --cfg), mean
//    over positions, on the model's own one-step samples z: how much class the distillation
//    target carries on what the generator makes.
// Usage: generator_probe --run ARTIFACTS/RUN [--label TEXT] [--sequences 256] [--cfg 2]
#include <cmath>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "training/job_support.h"
#include "training/jobs.h"

namespace dd2 {
namespace {

// Class change averaged over four bands of positions 1 .. n-1: fa, fb [B, n, w] for the same
// noise and different classes.
std::vector<double> ClassChange(const torch::Tensor& fa, const torch::Tensor& fb) {
  auto spread = (fa - fa.mean(0, true)).norm(2, -1).mean(0);
  auto change = ((fa - fb).norm(2, -1).mean(0) / spread.clamp_min(1e-8));
  const int64_t n = change.size(0);
  std::vector<double> bands;
  for (int64_t k = 0; k < 4; ++k) {
    const int64_t from = 1 + k * (n - 1) / 4, to = 1 + (k + 1) * (n - 1) / 4;
    bands.push_back(change.slice(0, from, to).mean().item<double>());
  }
  return bands;
}

// Held-out R² of (row, column) from features f [B, n, w].
std::pair<double, double> PositionR2(const torch::Tensor& f) {
  const int64_t b = f.size(0), n = f.size(1), side = GridSide(n);
  auto x = torch::cat({f.reshape({b * n, -1}), torch::ones({b * n, 1})}, 1).to(torch::kDouble);
  auto pos = torch::arange(n, torch::kDouble).repeat({b});
  auto y = torch::stack({torch::floor(pos / side), torch::fmod(pos, side)}, 1);
  const int64_t half = (b / 2) * n;
  auto w = std::get<0>(torch::linalg_lstsq(x.slice(0, 0, half), y.slice(0, 0, half)));
  auto yt = y.slice(0, half);
  auto r2 = 1 - (x.slice(0, half).matmul(w) - yt).pow(2).sum(0) / (yt - yt.mean(0)).pow(2).sum(0);
  return {r2[0].item<double>(), r2[1].item<double>()};
}

// How much the teacher's next-token distribution (with the CFG the run distilled with) depends
// on the class, given prefixes z [B, n, C]: KL(p(. | c, z) || p(. | c', z)) per position, mean.
double TeacherClassKl(ArTransformer& teacher, const torch::Tensor& classes, const torch::Tensor& others,
                      const torch::Tensor& z, const SamplingConfig& sampling) {
  const int64_t n = z.size(1);
  auto a = TeacherLogProbsFor(teacher, classes, z.slice(1, 0, n - 1), sampling);
  auto b = TeacherLogProbsFor(teacher, others, z.slice(1, 0, n - 1), sampling);
  return (a.exp() * (a - b)).sum(-1).mean().item<double>();
}

int Main(int argc, char** argv) {
  std::string run, label;
  int64_t sequences = 256;
  double cfg = 2.0;
  CLI::App app{"generator_probe"};
  app.add_option("--run", run, "a pipeline run's artifacts folder (holds tune/, distill/ and teacher/)")->required();
  app.add_option("--label", label, "first column of the rows (default: the folder's name)");
  app.add_option("--sequences", sequences)->capture_default_str();
  app.add_option("--cfg", cfg, "the teacher's classifier-free guidance scale for the class KL")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (label.empty()) label = std::filesystem::path(run).filename().string();
  torch::NoGradGuard no_grad;
  auto fail = [](const absl::Status& st) {
    std::fprintf(stderr, "generator_probe: %s\n", std::string(st.message()).c_str());
    return 1;
  };
  // The run's artifacts, read as its eval jobs read them: the tune job's model is the generator's
  // start, the distill job's EMA weights are what evals sample.
  JobContext ctx(Json::object(), "generator-probe#1", 1, "", run, "generator-probe", -1);
  auto stage1 = LoadDd2Generator(ctx, "tune", torch::kCPU);
  if (!stage1.ok()) return fail(stage1.status());
  auto generator = LoadDd2Generator(ctx, "distill", torch::kCPU);
  if (!generator.ok()) return fail(generator.status());
  auto teacher = LoadTeacher(ctx, "teacher", torch::kCPU);
  if (!teacher.ok()) return fail(teacher.status());
  const TransformerOptions& bo = (*stage1)->backbone()->options();
  SamplingConfig sampling;
  sampling.cfg = cfg;
  torch::manual_seed(0);  // the same classes and noise for every run, whatever building the models drew
  auto classes = torch::arange(sequences, torch::kLong) % bo.classes;
  auto others = (classes + 1 + torch::randint(bo.classes - 1, {sequences})) % bo.classes;
  auto eps = torch::randn({sequences, bo.tokens, bo.code_dim});
  const std::pair<const char*, ArDiffusion*> models[] = {{"stage-1 model", &*stage1}, {"generator (EMA)", &*generator}};
  for (const auto& [name, model] : models) {
    auto f = (*model)->Features(classes, eps);
    const auto change = ClassChange(f, (*model)->Features(others, eps));
    const auto [row, col] = PositionR2(f);
    const double kl = TeacherClassKl(*teacher, classes, others, (*model)->Generate(classes, eps), sampling);
    std::printf("| %s | %s | %.2f / %.2f / %.2f / %.2f | %.2f | %.2f | %.3f |\n", label.c_str(), name, change[0],
                change[1], change[2], change[3], row, col, kl);
  }
  return 0;
}

}  // namespace
}  // namespace dd2

int main(int argc, char** argv) { return dd2::Main(argc, argv); }
