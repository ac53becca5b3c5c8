#include "training/fused_one_step.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifdef DD2_WITH_CBLAS
#include <cblas.h>
#endif
#include "training/one_thread.h"

namespace dd2 {
namespace {

constexpr float kNormEps = 1e-5f;  // nn::LayerNormOptions' default, which every norm here uses

// c[m, n] = alpha a[m, k] op(b) + beta c, row-major; op(b) = b^T ([n, k]) with `trans_b`, else b ([k, n]).
void Gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, bool trans_b, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
#ifdef DD2_WITH_CBLAS
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
#else  // no CBLAS at build time: LibTorch's matmul on the same memory (beta is 0 or 1 here)
  auto f = torch::TensorOptions(torch::kFloat);
  auto A = torch::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, f);
  auto B = trans_b ? torch::from_blob(const_cast<float*>(b), {n, k}, {ldb, 1}, f).t()
                   : torch::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, f);
  auto C = torch::from_blob(c, {m, n}, {ldc, 1}, f);
  if (beta == 0.0f) {
    C.copy_(torch::mm(A, B) * alpha);
  } else {
    C.add_(torch::mm(A, B), alpha);
  }
#endif
}

// The loops between the GEMMs, cloned for AVX-512 and AVX2 besides the baseline (chosen when
// the library loads) and vectorised by `omp simd` (-fopenmp-simd: no OpenMP runtime): in plain
// scalar code the quality head's one-step took 0.46 ms against 0.40 (the layer norms most).
#if defined(__x86_64__)
#define DD2_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DD2_VECTOR_CLONES
#endif

// y[r] = (x[r] - mean) / sqrt(var + eps), times w plus b where given, for each row r.
DD2_VECTOR_CLONES void NormRows(const float* x, int64_t rows, int64_t width, const float* w, const float* b, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * width;
    float* out = y + r * width;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < width; ++j) sum += in[j];
    const float mean = sum / static_cast<float>(width);
    float var = 0;
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < width; ++j) var += (in[j] - mean) * (in[j] - mean);
    const float inv = 1.0f / std::sqrt(var / static_cast<float>(width) + kNormEps);
    if (w != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) out[j] = (in[j] - mean) * inv * w[j] + b[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) out[j] = (in[j] - mean) * inv;
    }
  }
}

// y[r] = b, or y[r] += b with `add`, for each row r of width `width`.
DD2_VECTOR_CLONES void BiasRows(const float* b, int64_t rows, int64_t width, bool add, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = y + r * width;
    if (add) {
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] += b[j];
    } else {
      std::copy_n(b, width, row);
    }
  }
}

// t[r] = t[r] (1 + scale[r]) + shift[r]; shift and scale rows are `stride` apart.
DD2_VECTOR_CLONES void ModulateRows(const float* shift, const float* scale, int64_t stride, int64_t rows, int64_t width,
                                    float* t) {
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      t[r * width + j] = t[r * width + j] * (1.0f + scale[r * stride + j]) + shift[r * stride + j];
    }
  }
}

// h[r] += gate[r] y[r]; gate rows are `stride` apart.
DD2_VECTOR_CLONES void AddGatedRows(const float* gate, int64_t stride, const float* y, int64_t rows, int64_t width,
                                    float* h) {
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) h[r * width + j] += gate[r * stride + j] * y[r * width + j];
  }
}

// Rows of a buffer as a [rows, cols] tensor, for LibTorch's vectorised activations (one op on
// a whole buffer costs less than a scalar exp or erf per element).
torch::Tensor View(float* first, int64_t rows, int64_t cols) {
  return torch::from_blob(first, {rows, cols}, torch::TensorOptions(torch::kFloat));
}

}  // namespace

// The caller's thread and threads - 1 helpers running one function as parts, with a spinning
// barrier between them (a part lasts microseconds: a sleeping wait would cost more than the
// work). Between runs a helper spins for kSpin, then sleeps until the next run.
class FusedOneStep::Team {
 public:
  explicit Team(int parts) : parts_(parts), errors_(parts) {
    for (int p = 1; p < parts; ++p) helpers_.emplace_back([this, p] { Serve(p); });
  }
  ~Team() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      run_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : helpers_) t.join();
  }
  int parts() const { return parts_; }

  // fn(part) for every part, part 0 on the caller's thread; returns when all have ended and
  // rethrows the first exception (a part that throws must do so before any Barrier).
  void Run(const std::function<void(int)>& fn) {
    fn_ = &fn;
    ended_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      run_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    Guarded(0);
    for (int spins = 0; ended_.load(std::memory_order_acquire) < parts_ - 1;) Pause(spins);
    for (auto& e : errors_) {
      if (e) std::rethrow_exception(std::exchange(e, nullptr));
    }
  }

  // Returns once every part has reached it.
  void Barrier() {
    const uint64_t round = round_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == parts_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      round_.fetch_add(1, std::memory_order_release);
    } else {
      for (int spins = 0; round_.load(std::memory_order_acquire) == round;) Pause(spins);
    }
  }

 private:
  static constexpr std::chrono::microseconds kSpin{200};

  // One step of a spinning wait: the CPU's pause hint where it has one.
  static void Relax() {
#if defined(__x86_64__)
    _mm_pause();
#endif
  }

  // A spinning wait's step; past a few microseconds it yields the core, so that threads that
  // outnumber the free cores (two evals at 2 threads on 2 cores) still make progress.
  static void Pause(int& spins) {
    if (++spins < 4096) {
      Relax();
    } else {
      std::this_thread::yield();
    }
  }

  void Guarded(int part) {
    try {
      (*fn_)(part);
    } catch (...) {
      errors_[part] = std::current_exception();
    }
  }

  void Serve(int part) {
    RunOnThisThreadOnly();
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (run_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) Relax();
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return run_.load(std::memory_order_acquire) != seen; });
        seen = run_.load(std::memory_order_acquire);
        if (stop_) return;
      }
      Guarded(part);
      ended_.fetch_add(1, std::memory_order_release);
    }
  }

  const int parts_;
  std::vector<std::exception_ptr> errors_;
  std::vector<std::thread> helpers_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;                                 // under mu_
  std::atomic<uint64_t> run_{0};                      // bumped per Run (under mu_, read spinning)
  std::atomic<int> ended_{0};                         // helpers done with the current Run
  std::atomic<int> arrived_{0};                       // parts at the current barrier
  std::atomic<uint64_t> round_{0};                    // barriers passed
  const std::function<void(int)>* fn_ = nullptr;      // the current Run's
};

bool FusedOneStep::Supports(ArDiffusion& generator) {
  for (const auto& p : generator->parameters()) {
    if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat) return false;
  }
  return generator->backbone()->options().arch == "dd2";
}

FusedOneStep::FusedOneStep(ArDiffusion& generator, int threads) {
  torch::NoGradGuard no_grad;
  const auto params = generator->named_parameters();
  auto tensor = [&](const std::string& name) {
    const torch::Tensor* p = params.find(name);
    TORCH_CHECK(p != nullptr, "FusedOneStep: the generator has no parameter ", name);
    return p->detach().contiguous().clone();
  };
  auto linear = [&](const std::string& name) { return MakeLinear(tensor(name + ".weight"), tensor(name + ".bias")); };
  auto norm = [&](const std::string& name) { return Norm{tensor(name + ".weight"), tensor(name + ".bias")}; };

  const TransformerOptions& o = generator->backbone()->options();
  TORCH_CHECK(o.arch == "dd2", "FusedOneStep: backbone arch ", o.arch, " (only dd2)");
  tokens_ = o.tokens;
  width_ = o.width;
  heads_ = o.heads;
  code_dim_ = o.code_dim;
  classes_ = o.classes;
  class_embed_ = tensor("backbone.class_embed.weight");
  pos_embed_ = tensor("backbone.pos_embed.weight");
  token_in_ = linear("backbone.token_in");
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string s = std::to_string(l);
    layers_.push_back(Layer{norm("backbone.norm1_" + s), norm("backbone.norm2_" + s), linear("backbone.qkv_" + s),
                            linear("backbone.proj_" + s), linear("backbone.fc1_" + s), linear("backbone.fc2_" + s)});
  }
  final_norm_ = norm("backbone.final_norm");

  input_ = linear("head.input");
  cond_ = linear("head.cond");
  head_width_ = input_.out;
  std::vector<torch::Tensor> mod_weights, mod_biases;
  for (int64_t i = 0; params.find("head.mod" + std::to_string(i) + ".weight") != nullptr; ++i) {
    const std::string s = std::to_string(i);
    mod_weights.push_back(tensor("head.mod" + s + ".weight"));
    mod_biases.push_back(tensor("head.mod" + s + ".bias"));
    blocks_.push_back(HeadBlock{linear("head.fc1_" + s), linear("head.fc2_" + s)});
  }
  mod_weights.push_back(tensor("head.final_mod.weight"));
  mod_biases.push_back(tensor("head.final_mod.bias"));
  modulations_ = MakeLinear(torch::cat(mod_weights), torch::cat(mod_biases));
  out_ = linear("head.out");
  time_ = generator->head()->TimeVector(torch::ones({1})).reshape({-1}).contiguous().clone();
  TORCH_CHECK(token_in_.in == code_dim_ && input_.in == code_dim_ && out_.out == code_dim_ && cond_.in == width_ &&
                  modulations_.in == head_width_ && width_ % heads_ == 0,
              "FusedOneStep: the head does not fit the backbone (code dim ", code_dim_, ", width ", width_,
              ", head condition ", cond_.in, ")");

  const int64_t n = tokens_, w = width_, hw = head_width_;
  x_.resize(n * w);
  a_.resize(n * w);
  for (auto& qkv : qkv_) qkv.resize(n * 3 * w);
  scores_.resize(heads_ * n * n);
  probs_.resize(heads_ * n * n);
  y_.resize(n * w);
  hidden_.resize(n * 4 * w);
  features_.resize(n * w);
  h_.resize(n * hw);
  c_.resize(n * hw);
  m_.resize(n * modulations_.out);
  t1_.resize(n * hw);
  t2_.resize(n * hw);
  threads = static_cast<int>(std::clamp<int64_t>(threads, 1, n));
  if (threads > 1) team_ = std::make_unique<Team>(threads);
}

FusedOneStep::~FusedOneStep() = default;

FusedOneStep::Linear FusedOneStep::MakeLinear(const torch::Tensor& weight, const torch::Tensor& bias) {
  Linear l;
  l.out = weight.size(0);
  l.in = weight.size(1);
  l.bias = bias.contiguous().clone();
  for (int64_t j = 0; j < l.out; j += kBlock) {
    l.blocks.push_back(weight.slice(0, j, std::min(j + kBlock, l.out)).t().contiguous());
  }
  return l;
}

void FusedOneStep::Apply(const Linear& l, const float* x, int64_t rows, float* y, bool add) {
  BiasRows(l.bias.data_ptr<float>(), rows, l.out, add, y);
  for (size_t i = 0; i < l.blocks.size(); ++i) {
    const int64_t first = static_cast<int64_t>(i) * kBlock, width = l.blocks[i].size(1);
    Gemm(rows, width, l.in, 1.0f, x, l.in, /*trans_b=*/false, l.blocks[i].data_ptr<float>(), width, 1.0f, y + first,
         l.out);
  }
}

void FusedOneStep::LayerNorm(const Norm& norm, const float* x, int64_t rows, int64_t width, float* y) {
  NormRows(x, rows, width, norm.weight.defined() ? norm.weight.data_ptr<float>() : nullptr,
           norm.bias.defined() ? norm.bias.data_ptr<float>() : nullptr, y);
}

void FusedOneStep::Features(int64_t cls, const float* eps, int64_t r0, int64_t r1, float* f) {
  const int64_t n = tokens_, w = width_, dh = w / heads_, rows = r1 - r0, hn = heads_ * n;
  float* x = x_.data();
  // Rows r0..r1 of [class, eps_1 .. eps_{n-1}] plus positions.
  if (r0 == 0) std::copy_n(class_embed_.data_ptr<float>() + cls * w, w, x);
  const int64_t first = std::max<int64_t>(r0, 1);
  Apply(token_in_, eps + (first - 1) * code_dim_, r1 - first, x + first * w, /*add=*/false);
  BiasRows(pos_embed_.data_ptr<float>() + r0 * w, 1, rows * w, /*add=*/true, x + r0 * w);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  for (size_t index = 0; index < layers_.size(); ++index) {
    const Layer& l = layers_[index];
    float* qkv = qkv_[index % 2].data();  // two, so that a part a layer ahead never overwrites keys still read
    LayerNorm(l.norm1, x + r0 * w, rows, w, a_.data() + r0 * w);
    Apply(l.qkv, a_.data() + r0 * w, rows, qkv + r0 * 3 * w, false);
    if (team_) team_->Barrier();  // every row's keys and values written
    // Scores [query row, head, key] of these rows against keys 0..r1-1, scaled, masked.
    for (int64_t h = 0; h < heads_; ++h) {
      float* s = scores_.data() + r0 * hn + h * n;
      Gemm(rows, r1, dh, scale, qkv + r0 * 3 * w + h * dh, 3 * w, /*trans_b=*/true, qkv + w + h * dh, 3 * w, 0.0f, s,
           hn);
      for (int64_t i = r0; i < r1; ++i) std::fill(s + (i - r0) * hn + i + 1, s + (i - r0) * hn + n, -INFINITY);
    }
    auto probs = View(probs_.data() + r0 * hn, rows * heads_, n);
    at::softmax_out(probs, View(scores_.data() + r0 * hn, rows * heads_, n), -1);
    for (int64_t h = 0; h < heads_; ++h) {
      Gemm(rows, dh, r1, 1.0f, probs_.data() + r0 * hn + h * n, hn, /*trans_b=*/false, qkv + 2 * w + h * dh, 3 * w,
           0.0f, y_.data() + r0 * w + h * dh, w);
    }
    Apply(l.proj, y_.data() + r0 * w, rows, x + r0 * w, /*add=*/true);
    LayerNorm(l.norm2, x + r0 * w, rows, w, a_.data() + r0 * w);
    Apply(l.fc1, a_.data() + r0 * w, rows, hidden_.data() + r0 * 4 * w, false);
    auto hidden = View(hidden_.data() + r0 * 4 * w, rows, 4 * w);
    at::gelu_(hidden);
    Apply(l.fc2, hidden_.data() + r0 * 4 * w, rows, x + r0 * w, /*add=*/true);
  }
  LayerNorm(final_norm_, x + r0 * w, rows, w, f + r0 * w);
}

void FusedOneStep::Head(const float* eps, const float* f, int64_t r0, int64_t r1, float* out) {
  const int64_t hw = head_width_, stride = modulations_.out, rows = r1 - r0;
  float* h = h_.data() + r0 * hw;
  float* c = c_.data() + r0 * hw;
  float* m = m_.data() + r0 * stride;
  float* t1 = t1_.data() + r0 * hw;
  float* t2 = t2_.data() + r0 * hw;
  eps += r0 * code_dim_;
  out += r0 * code_dim_;
  Apply(input_, eps, rows, h, false);
  Apply(cond_, f + r0 * width_, rows, c, false);
  BiasRows(time_.data_ptr<float>(), rows, hw, /*add=*/true, c);
  auto cond = View(c, rows, hw);
  at::silu_(cond);
  Apply(modulations_, c, rows, m, false);  // per block [shift, scale, gate], then the final [shift, scale]
  auto modulate = [&](const float* shift, const float* scale) {  // t1 = LayerNorm(h) (1 + scale) + shift
    LayerNorm(Norm{}, h, rows, hw, t1);
    ModulateRows(shift, scale, stride, rows, hw, t1);
  };
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const float* shift = m + static_cast<int64_t>(i) * 3 * hw;
    modulate(shift, shift + hw);
    Apply(blocks_[i].fc1, t1, rows, t2, false);
    auto hidden = View(t2, rows, hw);
    at::silu_(hidden);
    Apply(blocks_[i].fc2, t2, rows, t1, false);
    AddGatedRows(shift + 2 * hw, stride, t1, rows, hw, h);
  }
  const float* shift = m + static_cast<int64_t>(blocks_.size()) * 3 * hw;
  modulate(shift, shift + hw);
  Apply(out_, t1, rows, out, false);
  for (int64_t i = 0; i < rows * code_dim_; ++i) out[i] = eps[i] - out[i];
}

torch::Tensor FusedOneStep::Generate(const torch::Tensor& classes, const torch::Tensor& eps) {
  TORCH_CHECK(eps.dim() == 3 && eps.size(1) == tokens_ && eps.size(2) == code_dim_ && eps.device().is_cpu() &&
                  eps.scalar_type() == torch::kFloat,
              "FusedOneStep: eps must be [B, ", tokens_, ", ", code_dim_, "] float on the CPU, not ", eps.sizes());
  auto e = eps.contiguous();
  auto cls = classes.to(torch::kLong).contiguous();
  TORCH_CHECK(cls.numel() == e.size(0), "FusedOneStep: ", cls.numel(), " classes for ", e.size(0), " samples");
  for (int64_t b = 0; b < e.size(0); ++b) {
    const int64_t c = cls.data_ptr<int64_t>()[b];
    TORCH_CHECK(c >= 0 && c <= classes_, "FusedOneStep: class ", c, " outside 0..", classes_);
  }
  auto out = torch::empty_like(e);
  const int64_t per = tokens_ * code_dim_;
  // Every sample's rows in equal parts, one per thread: the head is row by row and the backbone
  // needs every row's keys once per layer (a barrier).
  auto part = [&](int p) {
    const int parts = team_ ? team_->parts() : 1;
    const int64_t r0 = tokens_ * p / parts, r1 = tokens_ * (p + 1) / parts;
    for (int64_t b = 0; b < e.size(0); ++b) {
      const float* eps_b = e.data_ptr<float>() + b * per;
      Features(cls.data_ptr<int64_t>()[b], eps_b, r0, r1, features_.data());
      Head(eps_b, features_.data(), r0, r1, out.data_ptr<float>() + b * per);
      if (team_) team_->Barrier();  // the next sample's first layer must not overwrite keys still read
    }
  };
  if (!team_) {
    part(0);
    return out;
  }
  // The caller's OpenBLAS calls and LibTorch ops on one thread too while the parts run (this
  // thread's OpenMP setting only; at::set_num_threads would rebuild LibTorch's thread pools).
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  try {
    team_->Run(part);
  } catch (...) {
    omp_set_num_threads(before);
    throw;
  }
  omp_set_num_threads(before);
  return out;
}

}  // namespace dd2
