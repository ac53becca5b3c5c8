#include "training/dd2_update.h"

#include <algorithm>
#include <exception>
#include <functional>
#include <thread>

#include "training/one_thread.h"

namespace dd2 {
namespace {

void SetLr(torch::optim::Adam& adam, double lr) {
  for (auto& group : adam.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

std::vector<int64_t> Prepend(int64_t first, std::vector<int64_t> rest) {
  rest.insert(rest.begin(), first);
  return rest;
}

// The random numbers of update `step`, per sequence of this rank's batch B. On the CPU (the
// default): drawn for the whole gang from a generator seeded by (seed, step) and sharded. On the
// device: this rank's share only, from the device's generator seeded by (seed, step, rank).
class Draws {
 public:
  Draws(Distributed& dist, const Dd2UpdateOptions& o, int64_t step)
      : dist_(dist), batch_(o.batch), on_device_(o.device_noise),
        gen_(on_device_ ? at::globalContext().defaultGenerator(dist.device())
                        : MakeGenerator(o.seed * 7919 + static_cast<uint64_t>(step))) {
    if (on_device_) {
      std::lock_guard<std::mutex> lock(gen_.mutex());
      gen_.set_current_seed(o.seed * 7919 + static_cast<uint64_t>(step) + 1000003ull * (dist.rank() + 1));
    }
  }
  torch::Tensor Classes(int64_t classes) {
    return Local(torch::randint(classes, {Rows()}, gen_, Options().dtype(torch::kLong)));
  }
  torch::Tensor Uniform(const std::vector<int64_t>& per_sequence, double lo, double hi) {
    return Local(torch::rand(Prepend(Rows(), per_sequence), gen_, Options()) * (hi - lo) + lo);
  }
  torch::Tensor Normal(const std::vector<int64_t>& per_sequence) {
    return Local(torch::randn(Prepend(Rows(), per_sequence), gen_, Options()));
  }
  // psi's flow-matching noise: m draws per sequence, as m blocks of the batch.
  std::pair<torch::Tensor, torch::Tensor> Flow(int64_t m, int64_t n, int64_t c, double t_min, double t_max) {
    if (!on_device_) return DrawNoise(dist_, m, Rows(), n, c, t_min, t_max, gen_);
    auto t = torch::rand({m * batch_, n}, gen_, Options()) * (t_max - t_min) + t_min;
    return {t, torch::randn({m * batch_, n, c}, gen_, Options())};
  }

 private:
  int64_t Rows() const { return on_device_ ? batch_ : batch_ * dist_.world_size(); }
  torch::TensorOptions Options() const { return torch::TensorOptions(on_device_ ? dist_.device() : torch::kCPU); }
  torch::Tensor Local(const torch::Tensor& drawn) const { return on_device_ ? drawn : dist_.Shard(drawn); }

  Distributed& dist_;
  int64_t batch_;
  bool on_device_;
  at::Generator gen_;
};

// Runs body(s) for s = 0 .. n-1, each on its own thread (s = 0 on the caller's), the others
// with one intra-op thread; rethrows the first exception after all have ended.
void OnThreads(int64_t n, const std::function<void(int64_t)>& body) {
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  for (int64_t s = 1; s < n; ++s) {
    threads.emplace_back([&, s] {
      try {
        RunOnThisThreadOnly();
        body(s);
      } catch (...) {
        errors[s] = std::current_exception();
      }
    });
  }
  try {
    body(0);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Slice s of `parts` equal ones along dim 0 of a batch-major tensor.
torch::Tensor Part(const torch::Tensor& x, int64_t s, int64_t parts) {
  const int64_t rows = x.size(0) / parts;
  return x.slice(0, s * rows, (s + 1) * rows);
}

// The same slice of each of the m blocks of a tensor laid out as m blocks of the batch, again
// as m blocks: psi's flow-matching noise.
torch::Tensor PartOfBlocks(const torch::Tensor& x, int64_t m, int64_t s, int64_t parts) {
  auto sizes = x.sizes().vec();
  sizes[0] /= m;
  sizes.insert(sizes.begin(), m);
  auto part = Part(x.reshape(sizes).transpose(0, 1), s, parts).transpose(0, 1);
  sizes.erase(sizes.begin());
  sizes[0] = -1;
  return part.reshape(sizes);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> DrawNoise(Distributed& dist, int64_t m, int64_t global_batch, int64_t n,
                                                  int64_t c, double t_min, double t_max, at::Generator& gen) {
  auto t = torch::rand({m, global_batch, n}, gen) * (t_max - t_min) + t_min;
  auto eps = torch::randn({m, global_batch, n, c}, gen);
  return {dist.Shard(t, 1).reshape({-1, n}), dist.Shard(eps, 1).reshape({-1, n, c})};
}

Dd2Updater::Dd2Updater(Distributed& dist, Dd2Networks nets, torch::optim::Adam& opt_g, torch::optim::Adam& opt_psi,
                       const Dd2UpdateOptions& options)
    : dist_(dist), nets_(std::move(nets)), opt_g_(opt_g), opt_psi_(opt_psi), o_(options) {
  TORCH_CHECK(o_.batch_threads >= 1 && o_.batch % o_.batch_threads == 0, "Dd2Updater: batch_threads ",
              o_.batch_threads, " does not divide the batch of ", o_.batch);
}

torch::Tensor Dd2Updater::PartsStep(torch::optim::Optimizer& optimizer,
                                    const std::function<torch::Tensor(int64_t)>& loss_of_part) {
  const int64_t parts = o_.batch_threads;
  if (parts == 1) {
    auto loss = loss_of_part(0);
    dist_.Step(optimizer, loss);
    return loss.detach();
  }
  std::vector<torch::Tensor> params;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) params.push_back(p);
  }
  std::vector<torch::Tensor> losses(parts);
  std::vector<std::vector<torch::Tensor>> grads(parts);
  OnThreads(parts, [&](int64_t s) {
    auto loss = loss_of_part(s);
    // Gradients returned, not accumulated: the parts' threads share the parameters.
    grads[s] = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
    losses[s] = loss.detach();
  });
  // Equal parts, each loss a mean over its part: the batch's loss and gradients are their means.
  std::vector<torch::Tensor> mean(params.size());
  for (size_t j = 0; j < params.size(); ++j) {
    for (int64_t s = 0; s < parts; ++s) {
      if (grads[s][j].defined()) mean[j] = mean[j].defined() ? mean[j] + grads[s][j] : grads[s][j];
    }
    if (mean[j].defined()) mean[j] = mean[j] / static_cast<double>(parts);
  }
  dist_.Step(optimizer, mean);
  return torch::stack(losses).mean();
}

std::map<std::string, torch::Tensor> Dd2Updater::Step(int64_t step) {
  ArDiffusion& g = nets_.generator;
  ArDiffusion& psi = nets_.guidance;
  const TransformerOptions bo = g->backbone()->options();
  const int64_t k = o_.guidance_only ? 1 : o_.k;
  Draws draw(dist_, o_, step);
  // Linear warm-up from 1e-6, counted in guidance updates (dd2-method §5.3).
  const double frac = o_.warmup > 0 ? std::min(1.0, static_cast<double>(step * k + 1) / o_.warmup) : 1.0;
  SetLr(opt_g_, 1e-6 + (o_.lr_g - 1e-6) * frac);
  SetLr(opt_psi_, 1e-6 + (o_.lr_psi - 1e-6) * frac);
  // psi's K batches: the random numbers in the order the updates use them, then the generator
  // (fixed during these updates) samples all K batches in one forward pass.
  std::vector<torch::Tensor> classes(k), eps(k), t(k), noise(k);
  for (int64_t i = 0; i < k; ++i) {
    classes[i] = draw.Classes(bo.classes);
    eps[i] = draw.Normal({bo.tokens, bo.code_dim});
    std::tie(t[i], noise[i]) = draw.Flow(o_.m, bo.tokens, bo.code_dim, o_.t_min, o_.t_max);
  }
  const int64_t parts = o_.batch_threads;
  std::vector<torch::Tensor> z;
  {
    auto all_classes = torch::cat(classes), all_eps = torch::cat(eps);
    std::vector<torch::Tensor> samples(parts);
    OnThreads(parts, [&](int64_t s) {
      torch::NoGradGuard no_grad;
      samples[s] = g->Generate(Part(all_classes, s, parts), Part(all_eps, s, parts));
    });
    z = torch::cat(samples).chunk(k);
  }
  torch::Tensor psi_loss;  // summed on the device: no host sync inside the update
  for (int64_t i = 0; i < k; ++i) {
    auto loss = PartsStep(opt_psi_, [&](int64_t s) {
      return GuidanceFmLoss(psi, Part(classes[i], s, parts), Part(z[i], s, parts), PartOfBlocks(t[i], o_.m, s, parts),
                            PartOfBlocks(noise[i], o_.m, s, parts));
    });
    psi_loss = i == 0 ? loss : psi_loss + loss;
  }
  std::map<std::string, torch::Tensor> out = {{"guidance_loss", psi_loss / static_cast<double>(k)}};
  if (!o_.guidance_only) {
    auto classes = draw.Classes(bo.classes);
    auto eps = draw.Normal({bo.tokens, bo.code_dim});
    auto t = draw.Uniform({bo.tokens}, o_.t_min, o_.t_max);
    auto noise = draw.Normal({bo.tokens, bo.code_dim});
    torch::Tensor loss;
    {
      FrozenParameters frozen(psi->head()->parameters());  // here, not per part: the parts' threads share them
      loss = PartsStep(opt_g_, [&](int64_t s) {
        auto c = Part(classes, s, parts);
        return TokensCsdLoss(g->Generate(c, Part(eps, s, parts)), psi, nets_.teacher, nets_.codebook, c,
                             Part(t, s, parts), Part(noise, s, parts), o_.sampling, o_.csd);
      });
    }
    const double rate = EmaRate(o_.steps_before + step, o_.ema_max);
    EmaUpdate(*nets_.ema, *g, rate);
    out["csd_loss"] = loss;
    out["ema_rate"] = torch::tensor(rate, torch::kFloat64);
  }
  return out;
}

}  // namespace dd2
