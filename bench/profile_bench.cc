// profile_bench: where the time goes in one DD2 distillation update and in batch-1 sampling, at
// the sizes of a pipeline configuration (default: examples/fmnist.yaml's quality configuration),
// on this machine, with networks initialised at random (timing does not depend on the weights).
//   1. The machine: the OpenBLAS kernel in use and LibTorch's own matmul GFLOP/s at the shapes
//      these networks multiply, measured in this run.
//   2. One distillation update (K guidance updates + one generator update), phase by phase:
//      the real update (training/dd2_update.h) timed as a whole, and the same computation
//      decomposed into phases with a timer around each; matmul FLOPs per update counted from
//      the GEMMs LibTorch runs (forward and backward), achieved GFLOP/s and its ratio to the
//      measured matmul rate.
//   3. Batch-1 sampling: the KV-cached teacher (CFG) and DD2 one-step, back to back on the same
//      thread count (tokens only, and with the VQ decoder), ATen op counts, one-step's parts.
// Prints Markdown tables (bench/profile.sh). Not a test: nothing here asserts a speed.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/record_function.h>
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "training/dd2_update.h"
#include "training/eval.h"

namespace dd2 {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Median wall time of `fn` over `repeats` calls after one warm-up call (ms).
double TimeMs(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    fn();
    ms.push_back(MsSince(t0));
  }
  return Median(ms);
}

// ---------------------------------------------------------------- counting ATen ops and GEMM FLOPs

struct OpCount {
  int64_t top_level = 0;  // ops called by our code (not from inside another op)
  int64_t all = 0;        // every ATen op dispatched, nested ones included
  double gemm_flops = 0;  // 2 M N K of every mm/addmm/bmm/baddbmm
  std::map<std::string, double> top_level_ms;  // wall time of the top-level ops, by name
};

OpCount* g_count = nullptr;
int g_depth = 0;
Clock::time_point g_top_start;

std::vector<int64_t> Sizes(const c10::IValue& v) {
  return v.isTensor() ? v.toTensor().sizes().vec() : std::vector<int64_t>{};
}

std::unique_ptr<at::ObserverContext> OnOpStart(const at::RecordFunction& fn) {
  if (g_count == nullptr || fn.scope() != at::RecordScope::FUNCTION) return nullptr;
  const std::string name = fn.name();
  if (g_depth++ == 0) {
    ++g_count->top_level;
    g_top_start = Clock::now();
  }
  ++g_count->all;
  auto in = fn.inputs();
  if (name == "aten::mm" && in.size() >= 2) {
    auto a = Sizes(in[0]), b = Sizes(in[1]);
    if (a.size() == 2 && b.size() == 2) g_count->gemm_flops += 2.0 * a[0] * a[1] * b[1];
  } else if (name == "aten::addmm" && in.size() >= 3) {
    auto a = Sizes(in[1]), b = Sizes(in[2]);
    if (a.size() == 2 && b.size() == 2) g_count->gemm_flops += 2.0 * a[0] * a[1] * b[1];
  } else if ((name == "aten::bmm" && in.size() >= 2) || (name == "aten::baddbmm" && in.size() >= 3)) {
    auto a = Sizes(in[name == "aten::bmm" ? 0 : 1]), b = Sizes(in[name == "aten::bmm" ? 1 : 2]);
    if (a.size() == 3 && b.size() == 3) g_count->gemm_flops += 2.0 * a[0] * a[1] * a[2] * b[2];
  }
  return nullptr;
}

void OnOpEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  if (g_count == nullptr || fn.scope() != at::RecordScope::FUNCTION) return;
  if (--g_depth == 0) g_count->top_level_ms[fn.name()] += MsSince(g_top_start);
}

// Ops and GEMM FLOPs of one call of `fn`.
OpCount Count(const std::function<void()>& fn) {
  OpCount count;
  auto handle = at::addGlobalCallback(at::RecordFunctionCallback(OnOpStart, OnOpEnd).needsInputs(true));
  g_count = &count;
  g_depth = 0;
  fn();
  g_count = nullptr;
  at::removeCallback(handle);
  return count;
}

// The `n` top-level ops of `count` that took the most wall time.
void PrintTopOps(const std::string& what, const OpCount& count, size_t n) {
  std::vector<std::pair<double, std::string>> ops;
  double total = 0;
  for (const auto& [name, ms] : count.top_level_ms) {
    ops.emplace_back(ms, name);
    total += ms;
  }
  std::sort(ops.rbegin(), ops.rend());
  std::printf("\nTop-level ATen ops of %s by wall time (counting adds overhead: %.2f ms in all here):\n\n"
              "| op | ms | share |\n|---|---|---|\n", what.c_str(), total);
  for (size_t i = 0; i < std::min(n, ops.size()); ++i) {
    std::printf("| %s | %.3f | %.0f%% |\n", ops[i].second.c_str(), ops[i].first, 100.0 * ops[i].first / total);
  }
}

// ---------------------------------------------------------------- the machine

std::string OpenBlasInfo() {
  using Fn = char* (*)();
  auto core = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  auto config = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  if (core == nullptr) return "not OpenBLAS (openblas_get_corename not found)";
  std::string out = std::string("core ") + core();
  if (config != nullptr) out += std::string(", ") + config();
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  out += std::string(", OPENBLAS_CORETYPE=") + (env != nullptr ? env : "(unset)");
  return out;
}

// torch::mm GFLOP/s for [m, k] x [k, n].
double MatmulGflops(int64_t m, int64_t k, int64_t n) {
  auto a = torch::randn({m, k}), b = torch::randn({k, n});
  const double flops = 2.0 * m * k * n;
  const int repeats = std::max(5, static_cast<int>(2e9 / flops));  // about 2 GFLOP per measurement
  const double ms = TimeMs(repeats, [&] { auto c = torch::mm(a, b); });
  return flops / (ms * 1e6);
}

struct Shapes {
  int64_t tokens = 49, vocab = 256, code_dim = 8, width = 64, layers = 2, heads = 4;
  int64_t head_width = 128, head_depth = 2;
  int64_t batch = 32, k = 4, m = 2;
  double cfg = 2.0;
};

// ---------------------------------------------------------------- networks

struct Nets {
  std::unique_ptr<Distributed> dist;
  Dd2Networks dd2;
  VqVae tok{nullptr};
};

Nets MakeNets(const Shapes& s) {
  torch::manual_seed(0);
  TransformerOptions bo;
  bo.vocab = s.vocab;
  bo.code_dim = s.code_dim;
  bo.tokens = s.tokens;
  bo.width = s.width;
  bo.layers = s.layers;
  bo.heads = s.heads;
  HeadOptions ho;
  ho.code_dim = s.code_dim;
  ho.cond_dim = s.width;
  ho.width = s.head_width;
  ho.depth = s.head_depth;
  Nets n;
  n.dist = *Distributed::Create({});
  VqVaeOptions vo;
  vo.codebook_size = s.vocab;
  vo.code_dim = s.code_dim;
  vo.grid = s.tokens == 256 ? 16 : 7;
  n.tok = VqVae(vo);
  n.dd2.teacher = ArTransformer(bo);
  n.dd2.codebook = n.tok->Codebook().detach();
  n.dd2.generator = ArDiffusion(bo, ho);
  n.dd2.guidance = ArDiffusion(bo, ho);
  n.dd2.ema = ArDiffusion(bo, ho);
  torch::NoGradGuard no_grad;
  for (auto* net : {&n.dd2.generator, &n.dd2.guidance, &n.dd2.ema}) {
    for (auto& p : (*net)->head()->parameters()) p.normal_(0, 0.02);  // a trained head is not zero
  }
  return n;
}

// ---------------------------------------------------------------- 2. one distillation update

struct Phases {
  std::vector<std::string> order;
  std::map<std::string, double> ms;
  void Add(const std::string& name, Clock::time_point t0) { AddMs(name, MsSince(t0)); }
  void AddMs(const std::string& name, double elapsed) {
    if (!ms.count(name)) order.push_back(name);
    ms[name] += elapsed;
  }
};

// One update decomposed: the same computation as Dd2Updater::Step (without warm-up or
// collectives), a timer around each phase.
void PhasedUpdate(Nets& n, const Shapes& s, torch::optim::Adam& opt_g, torch::optim::Adam& opt_psi, int64_t step,
                  Phases& ph) {
  auto& g = n.dd2.generator;
  auto& psi = n.dd2.guidance;
  auto gen = MakeGenerator(7919 + static_cast<uint64_t>(step));
  SamplingConfig sampling;
  sampling.cfg = s.cfg;
  auto t0 = Clock::now();
  std::vector<torch::Tensor> all_classes(s.k), all_eps(s.k), all_t(s.k), all_noise(s.k);
  for (int64_t i = 0; i < s.k; ++i) {
    all_classes[i] = torch::randint(10, {s.batch}, gen, torch::kLong);
    all_eps[i] = torch::randn({s.batch, s.tokens, s.code_dim}, gen);
    std::tie(all_t[i], all_noise[i]) = DrawNoise(*n.dist, s.m, s.batch, s.tokens, s.code_dim, 0.01, 0.99, gen);
  }
  ph.Add("random numbers", t0);
  t0 = Clock::now();
  std::vector<torch::Tensor> all_z;
  {
    torch::NoGradGuard no_grad;
    all_z = g->Generate(torch::cat(all_classes), torch::cat(all_eps)).chunk(s.k);
  }
  ph.Add("psi: generator forward, no grad (K batches at once)", t0);
  for (int64_t i = 0; i < s.k; ++i) {
    const auto &classes = all_classes[i], &z = all_z[i], &t = all_t[i], &noise = all_noise[i];
    t0 = Clock::now();
    auto features = psi->Features(classes, z);
    ph.Add("psi: backbone forward", t0);
    t0 = Clock::now();
    auto rep = [&](const torch::Tensor& x) { return torch::cat(std::vector<torch::Tensor>(s.m, x)); };
    auto qm = rep(z), fm = rep(features);
    auto x = (1 - t.unsqueeze(-1)) * qm + t.unsqueeze(-1) * noise;
    auto loss = torch::mse_loss(psi->Velocity(x, t, fm), noise - qm);
    ph.Add("psi: head forward (m draws) + loss", t0);
    t0 = Clock::now();
    opt_psi.zero_grad();
    loss.backward();
    ph.Add("psi: backward", t0);
    t0 = Clock::now();
    opt_psi.step();
    ph.Add("psi: Adam", t0);
    t0 = Clock::now();
    (void)loss.item<double>();
    ph.Add("host syncs (.item)", t0);
  }
  t0 = Clock::now();
  auto classes = torch::randint(10, {s.batch}, gen, torch::kLong);
  auto eps = torch::randn({s.batch, s.tokens, s.code_dim}, gen);
  auto tt = torch::rand({s.batch, s.tokens}, gen) * 0.98 + 0.01;
  auto noise = torch::randn({s.batch, s.tokens, s.code_dim}, gen);
  ph.Add("random numbers", t0);
  t0 = Clock::now();
  auto z = g->Generate(classes, eps);
  ph.Add("G: generator forward", t0);
  torch::Tensor log_p, features;
  {
    torch::NoGradGuard no_grad;
    t0 = Clock::now();
    log_p = TeacherLogProbsFor(n.dd2.teacher, classes, z.detach().slice(1, 0, s.tokens - 1), sampling);
    ph.Add("G: teacher forward with CFG", t0);
    t0 = Clock::now();
    features = psi->Features(classes, z.detach());
    ph.Add("G: psi backbone, no grad", t0);
  }
  // The CSD loss as TokensCsdLoss computes it, psi's head timed apart from the rest.
  t0 = Clock::now();
  auto head_params = psi->head()->parameters();
  for (auto& p : head_params) p.set_requires_grad(false);
  double head_ms = 0;
  auto loss = CsdLoss(z, tt, noise, log_p, n.dd2.codebook,
                      [&](const torch::Tensor& x, const torch::Tensor& t) {
                        const auto h0 = Clock::now();
                        auto v = psi->Velocity(x, t, features);
                        head_ms += MsSince(h0);
                        return v;
                      },
                      CsdOptions());
  ph.AddMs("G: closed-form denoiser + CSD loss", MsSince(t0) - head_ms);
  ph.AddMs("G: psi head forward (frozen)", head_ms);
  t0 = Clock::now();
  opt_g.zero_grad();
  loss.backward();
  for (auto& p : head_params) p.set_requires_grad(true);
  ph.Add("G: backward", t0);
  t0 = Clock::now();
  opt_g.step();
  ph.Add("G: Adam", t0);
  t0 = Clock::now();
  EmaUpdate(*n.dd2.ema, *g, EmaRate(step, 0.9999));
  ph.Add("G: EMA", t0);
  t0 = Clock::now();
  (void)loss.item<double>();
  ph.Add("host syncs (.item)", t0);
}

// The best matmul rate at the shapes the distillation multiplies most (backbone qkv and MLP at
// batch x tokens rows, the head's layers at m x batch x tokens rows); prints a table when `print`.
double MatmulRate(const Shapes& s, bool print) {
  const int64_t rows = s.batch * s.tokens;
  struct Shape { int64_t m, k, n; };
  const std::vector<Shape> shapes = {{rows, s.width, 3 * s.width}, {rows, s.width, 4 * s.width},
                                     {s.m * rows, s.head_width, s.head_width}, {s.m * rows, s.head_width, 3 * s.head_width}};
  if (print) std::printf("\n## The machine's matmul (torch::mm, this run)\n\n| shape | GFLOP/s |\n|---|---|\n");
  double best = 0;
  for (const auto& sh : shapes) {
    const double gf = MatmulGflops(sh.m, sh.k, sh.n);
    best = std::max(best, gf);
    if (print) {
      std::printf("| [%lld, %lld] x [%lld, %lld] | %.1f |\n", static_cast<long long>(sh.m), static_cast<long long>(sh.k),
                  static_cast<long long>(sh.k), static_cast<long long>(sh.n), gf);
    }
  }
  return best;
}

void ProfileDistill(const Shapes& s, int steps, double matmul_gflops) {
  Nets n = MakeNets(s);
  Dd2UpdateOptions o;
  o.k = s.k;
  o.m = s.m;
  o.batch = s.batch;
  o.lr_g = o.lr_psi = 3e-4;
  o.sampling.cfg = s.cfg;
  torch::optim::Adam opt_g(n.dd2.generator->parameters(), torch::optim::AdamOptions(3e-4).betas({0.9, 0.95}));
  torch::optim::Adam opt_psi(n.dd2.guidance->parameters(), torch::optim::AdamOptions(3e-4).betas({0.9, 0.95}));
  Dd2Updater updater(*n.dist, n.dd2, opt_g, opt_psi, o);
  int64_t step = 0;
  const double update_ms = TimeMs(steps, [&] { updater.Step(step++); });
  const OpCount count = Count([&] { updater.Step(step++); });
  Phases ph;
  PhasedUpdate(n, s, opt_g, opt_psi, step++, ph);  // warm-up
  ph = Phases();
  for (int i = 0; i < steps; ++i) PhasedUpdate(n, s, opt_g, opt_psi, step++, ph);
  double phase_sum = 0;
  for (const auto& [name, ms] : ph.ms) phase_sum += ms / steps;
  // This machine's speed drifts (build-notes pitfall 4): the matmul rate again, the better counts.
  matmul_gflops = std::max(matmul_gflops, MatmulRate(s, false));
  const double gflops = count.gemm_flops / (update_ms * 1e6);
  std::printf("\n## One distillation update (K = %lld, m = %lld, batch %lld, backbone width %lld, head width %lld)\n\n",
              static_cast<long long>(s.k), static_cast<long long>(s.m), static_cast<long long>(s.batch),
              static_cast<long long>(s.width), static_cast<long long>(s.head_width));
  std::printf("Dd2Updater::Step: **%.1f ms** per update (%.2f updates/s; median of %d), %lld ATen ops (%lld called directly),\n",
              update_ms, 1000.0 / update_ms, steps, static_cast<long long>(count.all),
              static_cast<long long>(count.top_level));
  std::printf("%.2f GFLOP of matmuls per update (forward and backward): **%.1f GFLOP/s achieved, %.0f%% of the measured "
              "matmul rate** (%.0f GFLOP/s, the better of a measurement before and one after the update's).\n\n",
              count.gemm_flops / 1e9, gflops, 100.0 * gflops / matmul_gflops, matmul_gflops);
  std::printf("| phase | ms per update | share |\n|---|---|---|\n");
  for (const auto& name : ph.order) {
    const double ms = ph.ms[name] / steps;
    std::printf("| %s | %.1f | %.0f%% |\n", name.c_str(), ms, 100.0 * ms / phase_sum);
  }
  std::printf("| (sum of phases) | %.1f | |\n", phase_sum);
  PrintTopOps("one update (backward included)", count, 12);
}

// ---------------------------------------------------------------- 3. batch-1 sampling

void ProfileSampling(const Shapes& s, int repeats) {
  Nets n = MakeNets(s);
  c10::InferenceMode inference;
  SamplingConfig sampling;
  sampling.cfg = s.cfg;
  auto teacher = MakeTeacherSampler(n.dd2.teacher, n.dd2.codebook, sampling);
  auto one_step = MakeOneStepSampler(n.dd2.ema, s.code_dim);
  auto classes = torch::tensor({3}, torch::kLong);
  auto gen = MakeGenerator(1);
  auto eps = torch::randn({1, s.tokens, s.code_dim});
  torch::Tensor tokens = one_step->Sample(classes, gen), features;
  struct Row {
    std::string what;
    double ms;
    OpCount ops;
  };
  auto row = [&](const std::string& what, const std::function<void()>& fn) {
    const double ms = TimeMs(repeats, fn);
    return Row{what, ms, Count(fn)};
  };
  // The teacher and one-step side by side on the same threads: teacher, one-step, teacher (the
  // teacher's two blocks averaged, so that drift cancels to first order).
  std::function<void()> teacher_fn = [&] { teacher->Sample(classes, gen); };
  const double teacher_before = TimeMs(repeats, teacher_fn);
  std::vector<Row> rows;
  rows.push_back(row("DD2 one-step (tokens), as eval samples (FusedOneStep)", [&] { one_step->Sample(classes, gen); }));
  rows.insert(rows.begin(), Row{"teacher: " + std::to_string(s.tokens) + " KV-cached steps with CFG (tokens)",
                                (teacher_before + TimeMs(repeats, teacher_fn)) / 2, Count(teacher_fn)});
  rows.push_back(row("DD2 one-step on LibTorch ops (ArDiffusion::Generate)", [&] { n.dd2.ema->Generate(classes, eps); }));
  rows.push_back(row("  its part: backbone features", [&] { features = n.dd2.ema->Features(classes, eps); }));
  rows.push_back(row("  its part: head", [&] {
    auto head = n.dd2.ema->head();
    head->Forward(eps, head->TimeVector(torch::ones({1})), features);
  }));
  // The tokenizer has a 7x7 or a 16x16 grid.
  const bool decodes = s.tokens == 49 || s.tokens == 256;
  if (decodes) rows.push_back(row("VQ decoder (both samplers)", [&] { n.tok->Decode(tokens); }));
  const double teacher_ms = rows[0].ms;
  std::printf("\n## Batch-1 sampling (%lld tokens, CFG %.1f; median of %d calls; timed teacher, one-step, teacher)\n\n",
              static_cast<long long>(s.tokens), s.cfg, repeats);
  std::printf("| what | ms | ATen ops (direct) | ATen ops (all) | matmul MFLOP |\n|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    std::printf("| %s | %.3f | %lld | %lld | %.2f |\n", r.what.c_str(), r.ms, static_cast<long long>(r.ops.top_level),
                static_cast<long long>(r.ops.all), r.ops.gemm_flops / 1e6);
  }
  const double decode = decodes ? rows.back().ms : 0;
  std::printf("\n");
  std::printf("**One-step speed-up at batch 1: %.1fx on tokens", teacher_ms / rows[1].ms);
  if (decode > 0) std::printf(", %.1fx with the decoder", (teacher_ms + decode) / (rows[1].ms + decode));
  std::printf(".** Its matmuls (%.2f MFLOP, counted on the LibTorch path: the fused one's BLAS calls are not ATen ops) "
              "ran at %.1f GFLOP/s; on LibTorch ops %.1f GFLOP/s, %.1fx on tokens.\n",
              rows[2].ops.gemm_flops / 1e6, rows[2].ops.gemm_flops / (rows[1].ms * 1e6),
              rows[2].ops.gemm_flops / (rows[2].ms * 1e6), teacher_ms / rows[2].ms);
  PrintTopOps("one DD2 one-step sample on LibTorch ops", rows[2].ops, 8);
}

int Main(int argc, char** argv) {
  CLI::App app{"profile_bench: where one DD2 distillation update's and batch-1 sampling's time goes"};
  Shapes s;
  int threads = 1, steps = 5, repeats = 51;
  std::string section = "all";
  app.add_option("--threads", threads, "intra-op threads (dd2-train uses 1)");
  app.add_option("--steps", steps, "distillation updates timed");
  app.add_option("--repeats", repeats, "sampling calls timed");
  app.add_option("--section", section, "all, machine, distill or sample")
      ->check(CLI::IsMember({"all", "machine", "distill", "sample"}));
  app.add_option("--tokens", s.tokens, "tokens per image (49: 7x7; 256: 16x16)");
  app.add_option("--batch", s.batch, "distillation batch");
  app.add_option("--k", s.k, "guidance updates per generator update");
  app.add_option("--m", s.m, "flow-matching draws per sequence");
  app.add_option("--width", s.width, "backbone width");
  app.add_option("--head-width", s.head_width, "head width");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  std::printf("# profile_bench (%d intra-op thread%s)\n\nOpenBLAS: %s\n", threads, threads == 1 ? "" : "s",
              OpenBlasInfo().c_str());
  const double best = MatmulRate(s, true);
  if (section == "all" || section == "distill") ProfileDistill(s, steps, best);
  if (section == "all" || section == "sample") ProfileSampling(s, repeats);
  return 0;
}

}  // namespace
}  // namespace dd2

int main(int argc, char** argv) { return dd2::Main(argc, argv); }
