#include "training/fused_one_step.h"

#include <algorithm>
#include <cmath>
#include <string>

#ifdef DD2_WITH_CBLAS
#include <cblas.h>
#endif

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
// scalar code the layer norms alone took a sixth of the one-step's time.
#define DD2_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

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

// A buffer as a [rows, cols] tensor, for LibTorch's vectorised activations (one op on a whole
// buffer costs less than a scalar exp or erf per element).
torch::Tensor View(std::vector<float>& buffer, int64_t rows, int64_t cols) {
  return torch::from_blob(buffer.data(), {rows, cols}, torch::TensorOptions(torch::kFloat));
}

}  // namespace

bool FusedOneStep::Supports(ArDiffusion& generator) {
  for (const auto& p : generator->parameters()) {
    if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat) return false;
  }
  return generator->backbone()->options().arch == "dd2";
}

FusedOneStep::FusedOneStep(ArDiffusion& generator) {
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
  qkv_.resize(n * 3 * w);
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
}

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

void FusedOneStep::Features(int64_t cls, const float* eps, float* f) {
  const int64_t n = tokens_, w = width_, dh = w / heads_;
  float* x = x_.data();
  // [class, eps_1 .. eps_{n-1}] plus positions.
  std::copy_n(class_embed_.data_ptr<float>() + cls * w, w, x);
  Apply(token_in_, eps, n - 1, x + w, /*add=*/false);
  const float* pos = pos_embed_.data_ptr<float>();
  for (int64_t i = 0; i < n * w; ++i) x[i] += pos[i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  for (const Layer& l : layers_) {
    LayerNorm(l.norm1, x, n, w, a_.data());
    Apply(l.qkv, a_.data(), n, qkv_.data(), false);
    for (int64_t h = 0; h < heads_; ++h) {  // scores of every head, scaled, then the causal mask
      const float* q = qkv_.data() + h * dh;
      float* s = scores_.data() + h * n * n;
      Gemm(n, n, dh, scale, q, 3 * w, /*trans_b=*/true, q + w, 3 * w, 0.0f, s, n);
      for (int64_t i = 0; i < n; ++i) std::fill(s + i * n + i + 1, s + (i + 1) * n, -INFINITY);
    }
    auto probs = View(probs_, heads_ * n, n);
    at::softmax_out(probs, View(scores_, heads_ * n, n), -1);
    for (int64_t h = 0; h < heads_; ++h) {
      Gemm(n, dh, n, 1.0f, probs_.data() + h * n * n, n, /*trans_b=*/false, qkv_.data() + 2 * w + h * dh, 3 * w, 0.0f,
           y_.data() + h * dh, w);
    }
    Apply(l.proj, y_.data(), n, x, /*add=*/true);
    LayerNorm(l.norm2, x, n, w, a_.data());
    Apply(l.fc1, a_.data(), n, hidden_.data(), false);
    auto hidden = View(hidden_, n, 4 * w);
    at::gelu_(hidden);
    Apply(l.fc2, hidden_.data(), n, x, /*add=*/true);
  }
  LayerNorm(final_norm_, x, n, w, f);
}

void FusedOneStep::Head(const float* eps, const float* f, float* out) {
  const int64_t n = tokens_, hw = head_width_, stride = modulations_.out;
  float* h = h_.data();
  float* c = c_.data();
  float* m = m_.data();
  Apply(input_, eps, n, h, false);
  Apply(cond_, f, n, c, false);
  BiasRows(time_.data_ptr<float>(), n, hw, /*add=*/true, c);
  auto cond = View(c_, n, hw);
  at::silu_(cond);
  Apply(modulations_, c, n, m, false);  // per block [shift, scale, gate], then the final [shift, scale]
  auto modulate = [&](const float* shift, const float* scale) {  // t1_ = LayerNorm(h) (1 + scale) + shift
    LayerNorm(Norm{}, h, n, hw, t1_.data());
    ModulateRows(shift, scale, stride, n, hw, t1_.data());
  };
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const float* shift = m + static_cast<int64_t>(i) * 3 * hw;
    modulate(shift, shift + hw);
    Apply(blocks_[i].fc1, t1_.data(), n, t2_.data(), false);
    auto hidden = View(t2_, n, hw);
    at::silu_(hidden);
    Apply(blocks_[i].fc2, t2_.data(), n, t1_.data(), false);
    const float* gate = shift + 2 * hw;
    AddGatedRows(gate, stride, t1_.data(), n, hw, h);
  }
  const float* shift = m + static_cast<int64_t>(blocks_.size()) * 3 * hw;
  modulate(shift, shift + hw);
  Apply(out_, t1_.data(), n, out, false);
  for (int64_t i = 0; i < n * code_dim_; ++i) out[i] = eps[i] - out[i];
}

torch::Tensor FusedOneStep::Generate(const torch::Tensor& classes, const torch::Tensor& eps) {
  TORCH_CHECK(eps.dim() == 3 && eps.size(1) == tokens_ && eps.size(2) == code_dim_ && eps.device().is_cpu() &&
                  eps.scalar_type() == torch::kFloat,
              "FusedOneStep: eps must be [B, ", tokens_, ", ", code_dim_, "] float on the CPU, not ", eps.sizes());
  auto e = eps.contiguous();
  auto cls = classes.to(torch::kLong).contiguous();
  TORCH_CHECK(cls.numel() == e.size(0), "FusedOneStep: ", cls.numel(), " classes for ", e.size(0), " samples");
  auto out = torch::empty_like(e);
  const int64_t per = tokens_ * code_dim_;
  for (int64_t b = 0; b < e.size(0); ++b) {
    const int64_t c = cls.data_ptr<int64_t>()[b];
    TORCH_CHECK(c >= 0 && c <= classes_, "FusedOneStep: class ", c, " outside 0..", classes_);
    Features(c, e.data_ptr<float>() + b * per, features_.data());
    Head(e.data_ptr<float>() + b * per, features_.data(), out.data_ptr<float>() + b * per);
  }
  return out;
}

}  // namespace dd2
