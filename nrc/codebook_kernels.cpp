// Fused CPU kernels of the codebook and the code-conditioned density (OpenMP): forward and backward.
//
// Built at first use by codebook_cpu.py (through nrc.native) and called through ctypes; free of
// torch and Python headers, like the hash grid's kernels. Semantics are nrc.codebook.Codebook +
// nrc.field.Decoder.density, which stay the reference:
//   logit_k = (2/T) h.c_k + bias_k - |h|^2/T     (bias_k = log gate_k - |c_k|^2/T, formed in torch)
//   slot    = the nearest open surface code, or the empty code (K) when its logit is higher
//   sigma   = E[slot] * exp(dv * v_0),  geo = [table[slot], v_1..v_V]  (empty: E = 0, table = 0)
//   v       = tanh(W detail + b)
// and the backward is the straight-through estimator's: the one-hot's gradient is handed to
// softmax(logits) (codes in `shut` take no share). Per point the torch version makes ~30 passes
// over (N, K + 1) and (N, D) tensors; here a point is read once forward and once backward.
//
// Threads split points in chunks; per-code gradient sums are kept in float per chunk and added in
// double in chunk order at the end, so the result does not depend on the number of threads.
// The per-point work is compiled for AVX2 and for baseline x86-64 (targets.h).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "targets.h"


namespace {

constexpr int64_t kChunk = 512;  // points per task
// Limits of the per-point arrays (codebook_cpu.py uses the torch path beyond them).
constexpr int kMaxKp = 64;
constexpr int kMaxD = 64;
#define ODIN_INLINE inline __attribute__((always_inline))

struct Kernel {
  const float *features, *detail, *codes, *bias, *never, *w, *b, *density, *table;
  const uint8_t* shut;
  float density_variation, two_over_t;
  int64_t n;
  int32_t d, k, g, nv, geo_width;  // nv: variation outputs (1 + variation_dim), 0 without the module
  // Padded to kp (a multiple of 8) code columns, so that the per-code loops are whole vectors:
  // (2/T) codes transposed (D, kp), bias (kp; padding -1e30), density (kp), table transposed (G, kp),
  // and 1 for the codes that take a soft share (0 for shut codes and the padding).
  int32_t kp;
  std::vector<float> codes_t, bias_p, density_p, table_t, soft_share;
};

// Per-code gradient sums, one block: codes (K + 1, D), w (NV, D), b (NV), density (K), table (K, G).
struct Sums {
  int64_t codes, w, b, density, table, size;
  explicit Sums(const Kernel& a)
      : codes(0),
        w(codes + (a.k + 1) * static_cast<int64_t>(a.d)),
        b(w + static_cast<int64_t>(a.nv) * a.d),
        density(b + a.nv),
        table(density + a.k),
        size(table + static_cast<int64_t>(a.k) * a.g) {}
};

// (2/T) h.c_k + bias_k for the kp padded columns. Without -|h|^2/T: it shifts every logit of a point
// alike, so it changes neither the choice nor the softmax, and its gradient sums to zero.
// KP, D: the padded code count and the code dimension when known at compile time (0: a's), so
// that the accumulators live in registers instead of round-tripping through memory.
template <int KP, int D>
ODIN_INLINE void logits_of(const Kernel& a, const float* h, float* out) {
  const int kp = KP ? KP : a.kp, d = D ? D : a.d;
  float acc[kMaxKp];
  for (int c = 0; c < kp; ++c) acc[c] = a.bias_p[c];
  for (int j = 0; j < d; ++j) {
    const float hj = h[j];
    const float* col = a.codes_t.data() + static_cast<int64_t>(j) * kp;
#pragma omp simd
    for (int c = 0; c < kp; ++c) acc[c] += hj * col[c];
  }
  for (int c = 0; c < kp; ++c) out[c] = acc[c];
}

// exp in a form the compiler inlines and vectorises (std::exp and std::tanh are libm calls, and
// were half of the forward's time): 2^n by the exponent bits times a degree-6 polynomial on
// [-ln2/2, ln2/2]; relative error < 2e-7. 0 below -87, exp(88) above 88.
ODIN_INLINE float fast_exp(float x) {
  const bool underflow = x < -87.0f;
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504f + 0.5f);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return underflow ? 0.0f : p * scale;
}

// fast_exp on 8 lanes with GCC's vector extensions, for x <= 0 (the softmax's): written out because
// GCC does not vectorise the scalar version's loop (its float selects stay branches).
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

ODIN_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

ODIN_INLINE v8f exp8_nonpositive(v8f x) {
  const v8i underflow = x < -87.0f;
  x = underflow ? -87.0f : x;
  const v8i ni = __builtin_convertvector(x * 1.44269504f - 0.5f, v8i);  // rounds to nearest for x <= 0
  const v8f n = __builtin_convertvector(ni, v8f);
  const v8f r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  v8f p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const v8f scale = reinterpret_cast<v8f>((ni + 127) << 23);
  return underflow ? 0.0f : p * scale;
}

// tanh = 1 - 2 / (exp(2x) + 1): absolute error < 3e-7.
ODIN_INLINE float fast_tanh(float x) { return 1.0f - 2.0f / (fast_exp(2.0f * x) + 1.0f); }

template <int KP, int D>
ODIN_INLINE void forward_impl(const Kernel& a, int64_t begin, int64_t end, float* sigma, float* geo, int64_t* slot,
                              int64_t* nearest, float* variation, double* vq, double* var) {
  const int d = D ? D : a.d;
  float logit[kMaxKp];
  for (int64_t p = begin; p < end; ++p) {
    const float* h = a.features + p * a.d;
    logits_of<KP, D>(a, h, logit);
    int best = 0;
    float best_logit = logit[0] + a.never[0];
    for (int c = 1; c < a.k; ++c) {
      const float value = logit[c] + a.never[c];
      if (value > best_logit) best_logit = value, best = c;  // strict: the first of equals, as argmax
    }
    const bool empty = logit[a.k] + a.never[a.k] > best_logit;
    const int chosen = empty ? a.k : best;
    slot[p] = chosen;
    nearest[p] = best;
    float* v = variation + p * a.nv;
    const float* x = a.detail + p * a.d;
    for (int i = 0; i < a.nv; ++i) {
      const float* row = a.w + static_cast<int64_t>(i) * a.d;
      float pre = 0.0f;
#pragma omp simd reduction(+ : pre)
      for (int j = 0; j < d; ++j) pre += row[j] * x[j];
      v[i] = fast_tanh(pre + a.b[i]);
      *var += static_cast<double>(v[i]) * v[i];
    }
    float* out = geo + p * a.geo_width;
    if (empty) {
      sigma[p] = 0.0f;
      for (int i = 0; i < a.g; ++i) out[i] = 0.0f;
    } else {
      sigma[p] = a.nv ? a.density[chosen] * fast_exp(a.density_variation * v[0]) : a.density[chosen];
      const float* row = a.table + static_cast<int64_t>(chosen) * a.g;
      for (int i = 0; i < a.g; ++i) out[i] = row[i];
    }
    for (int i = 1; i < a.nv; ++i) out[a.g + i - 1] = v[i];
    const float* code = a.codes + static_cast<int64_t>(chosen) * a.d;
    float err = 0.0f;
#pragma omp simd reduction(+ : err)
    for (int j = 0; j < d; ++j) err += (h[j] - code[j]) * (h[j] - code[j]);
    *vq += err;
  }
}

// scales: [d vq (codes side), d vq (features side), d variation cost], divided by the means' counts.
template <int KP, int D>
ODIN_INLINE void backward_impl(const Kernel& a, int64_t begin, int64_t end, const int64_t* slot,
                               const float* variation, const float* sigma, const float* grad_sigma,
                               const float* grad_geo, const float* scales, float* grad_logits, float* grad_features,
                               float* grad_detail, float* acc) {
  const int kp = KP ? KP : a.kp, d = D ? D : a.d;
  const Sums at(a);
  float *acc_codes = acc + at.codes, *acc_w = acc + at.w, *acc_b = acc + at.b;
  float *acc_density = acc + at.density, *acc_table = acc + at.table;
  float prob[kMaxKp] = {}, dprob[kMaxKp] = {}, dpre[kMaxKp] = {}, gh[kMaxD] = {}, gx[kMaxD] = {};
  const bool same = grad_detail == grad_features;
  for (int64_t p = begin; p < end; ++p) {
    const float* h = a.features + p * a.d;
    const int chosen = static_cast<int>(slot[p]);
    const float* v = variation + p * a.nv;
    const float* gg = grad_geo + p * a.geo_width;
    const float gs = grad_sigma[p];
    // Also for the empty code: its share of the soft assignment still has a gradient.
    const float ev = a.nv ? fast_exp(a.density_variation * v[0]) : 1.0f;
    for (int j = 0; j < d; ++j) gh[j] = 0.0f;
    if (grad_logits) {
      logits_of<KP, D>(a, h, prob);
      float top = -INFINITY;
      for (int c = 0; c <= a.k; ++c)
        if (!a.shut[c]) top = std::max(top, prob[c]);
      // Shut codes (their logit may exceed top) and the padding take no share.
      v8f sums = {};
      for (int c = 0; c < kp; c += 8) {
        v8f y = load8(prob + c) - top;
        y = y > 0.0f ? 0.0f : y;
        const v8f e = exp8_nonpositive(y) * load8(a.soft_share.data() + c);
        std::memcpy(prob + c, &e, sizeof(e));
        sums += e;
      }
      float total = 0.0f;
      for (int i = 0; i < 8; ++i) total += sums[i];
      // d prob_c = gs * ev * density_c + gg . table_c (0 for the empty code and the padding)
      const float se = gs * ev;
#pragma omp simd
      for (int c = 0; c < kp; ++c) dprob[c] = se * a.density_p[c];
      for (int i = 0; i < a.g; ++i) {
        const float gi = gg[i];
        const float* col = a.table_t.data() + static_cast<int64_t>(i) * kp;
#pragma omp simd
        for (int c = 0; c < kp; ++c) dprob[c] += gi * col[c];
      }
      const float inv_total = 1.0f / total;
      float mean = 0.0f;
#pragma omp simd reduction(+ : mean)
      for (int c = 0; c < kp; ++c) {
        prob[c] *= inv_total;
        mean += prob[c] * dprob[c];
      }
      // The logits' gradient goes out; its products with the codes and the features are two
      // (N, K + 1) matmuls the caller leaves to BLAS (per point here they were half the backward).
      float* dl = grad_logits + p * (a.k + 1);
      for (int c = 0; c <= a.k; ++c) dl[c] = prob[c] * (dprob[c] - mean);
    }
    if (chosen < a.k) {
      acc_density[chosen] += gs * ev;
      float* gt = acc_table + static_cast<int64_t>(chosen) * a.g;
      for (int i = 0; i < a.g; ++i) gt[i] += gg[i];
    }
    // VQ terms: mean |h - c_slot|^2, pulling the code (codes side) and the feature (features side).
    const float* code = a.codes + static_cast<int64_t>(chosen) * a.d;
    float* gc = acc_codes + static_cast<int64_t>(chosen) * a.d;
#pragma omp simd
    for (int j = 0; j < d; ++j) {
      const float diff = 2.0f * (h[j] - code[j]);
      gh[j] += scales[1] * diff;
      gc[j] -= scales[0] * diff;
    }
    if (a.nv) {
      for (int i = 0; i < a.nv; ++i) {
        const float dv = (i == 0 ? gs * sigma[p] * a.density_variation : gg[a.g + i - 1]) + scales[2] * 2.0f * v[i];
        dpre[i] = dv * (1.0f - v[i] * v[i]);
        acc_b[i] += dpre[i];
      }
      const float* x = a.detail + p * a.d;
      for (int j = 0; j < d; ++j) gx[j] = 0.0f;
      for (int i = 0; i < a.nv; ++i) {
        const float* row = a.w + static_cast<int64_t>(i) * a.d;
        float* gw = acc_w + static_cast<int64_t>(i) * a.d;
#pragma omp simd
        for (int j = 0; j < d; ++j) {
          gx[j] += dpre[i] * row[j];
          gw[j] += dpre[i] * x[j];
        }
      }
      if (same) {
        for (int j = 0; j < d; ++j) gh[j] += gx[j];
      } else {
        std::copy(gx, gx + d, grad_detail + p * a.d);
      }
    } else if (!same) {
      std::fill(grad_detail + p * a.d, grad_detail + (p + 1) * a.d, 0.0f);
    }
    std::copy(gh, gh + d, grad_features + p * a.d);
  }
}

// The (padded codes, code dimension) pairs of the presets and the benchmarks get their own code.
#define ODIN_DISPATCH(call)                                     \
  switch (a.kp * 1000 + a.d) {                                  \
    case 8008: call(8, 8); break;                               \
    case 8016: call(8, 16); break;                              \
    case 16008: call(16, 8); break;                             \
    case 16016: call(16, 16); break;                            \
    case 24008: call(24, 8); break;                             \
    case 24016: call(24, 16); break;                            \
    case 32016: call(32, 16); break;                            \
    default: call(0, 0);                                        \
  }

ODIN_TARGETS void forward_points(const Kernel& a, int64_t begin, int64_t end, float* sigma, float* geo,
                                 int64_t* slot, int64_t* nearest, float* variation, double* vq, double* var) {
#define ODIN_FORWARD(KP, D) forward_impl<KP, D>(a, begin, end, sigma, geo, slot, nearest, variation, vq, var)
  ODIN_DISPATCH(ODIN_FORWARD)
#undef ODIN_FORWARD
}

ODIN_TARGETS void backward_points(const Kernel& a, int64_t begin, int64_t end, const int64_t* slot,
                                  const float* variation, const float* sigma, const float* grad_sigma,
                                  const float* grad_geo, const float* scales, float* grad_logits,
                                  float* grad_features, float* grad_detail, float* acc) {
#define ODIN_BACKWARD(KP, D)                                                                                  \
  backward_impl<KP, D>(a, begin, end, slot, variation, sigma, grad_sigma, grad_geo, scales, grad_logits, grad_features, \
                       grad_detail, acc)
  ODIN_DISPATCH(ODIN_BACKWARD)
#undef ODIN_BACKWARD
}

Kernel make_kernel(const float* features, const float* detail, const float* codes, const float* bias,
                   const float* never, const uint8_t* shut, const float* w, const float* b, const float* density,
                   const float* table, float density_variation, float temperature, int64_t n, int32_t d,
                   int32_t k, int32_t g, int32_t nv) {
  Kernel a{features, detail, codes, bias, never, w, b, density, table, shut, density_variation,
           2.0f / temperature, n, d, k, g, nv, g + std::max(nv - 1, 0), (k + 1 + 7) / 8 * 8, {}, {}, {}, {}, {}};
  a.codes_t.assign(static_cast<size_t>(d) * a.kp, 0.0f);
  a.bias_p.assign(a.kp, -1e30f);
  a.density_p.assign(a.kp, 0.0f);
  a.table_t.assign(static_cast<size_t>(g) * a.kp, 0.0f);
  a.soft_share.assign(a.kp, 0.0f);
  for (int c = 0; c <= k; ++c) {
    a.bias_p[c] = bias[c];
    a.soft_share[c] = shut && shut[c] ? 0.0f : 1.0f;
    for (int j = 0; j < d; ++j) a.codes_t[static_cast<size_t>(j) * a.kp + c] = a.two_over_t * codes[c * d + j];
  }
  for (int c = 0; c < k; ++c) {
    if (density) a.density_p[c] = density[c];
    for (int i = 0; i < g; ++i) a.table_t[static_cast<size_t>(i) * a.kp + c] = table[c * g + i];
  }
  return a;
}

}  // namespace

extern "C" {

// Forward. never: (K + 1) additive masks of the hard choice (0 or -inf). Outputs: sigma (N),
// geo (N, G + NV - 1), slot (N, int64: K = empty), nearest (N, int64: nearest open surface code),
// variation (N, NV) (kept for the backward), sums[0] = sum |h - c_slot|^2, sums[1] = sum v^2.
void codebook_density_forward(const float* features, const float* detail, const float* codes, const float* bias,
                              const float* never, const float* w, const float* b, const float* density,
                              const float* table, float density_variation, float temperature, int64_t n, int32_t d,
                              int32_t k, int32_t g, int32_t nv, float* sigma, float* geo, int64_t* slot,
                              int64_t* nearest, float* variation, double* sums, int32_t threads) {
  const Kernel a = make_kernel(features, detail, codes, bias, never, nullptr, w, b, density, table,
                               density_variation, temperature, n, d, k, g, nv);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(2 * chunks, 0.0);  // per chunk, added in chunk order (as the backward's)
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c)
    forward_points(a, c * kChunk, std::min(n, (c + 1) * kChunk), sigma, geo, slot, nearest, variation,
                   &partial[2 * c], &partial[2 * c + 1]);
  double vq = 0.0, var = 0.0;
  for (int64_t c = 0; c < chunks; ++c) vq += partial[2 * c], var += partial[2 * c + 1];
  sums[0] = vq;
  sums[1] = var;
}

// Backward. grad_sigma (N), grad_geo (N, G + NV - 1); scales as backward_points'. shut: (K + 1)
// uint8, codes with no soft share. Writes grad_logits (N, K + 1; null: no gradient through the
// assignment, eval mode), grad_features and grad_detail (N, D; when they alias, the sum) without
// the logits' share, and the per-code gradients of codes (VQ share only), w, b, density, table.
void codebook_density_backward(const float* features, const float* detail, const float* codes, const float* bias,
                               const uint8_t* shut, const float* w, const float* density, const float* table,
                               const int64_t* slot, const float* variation, const float* sigma,
                               const float* grad_sigma, const float* grad_geo, const float* scales,
                               float density_variation, float temperature, int64_t n, int32_t d, int32_t k,
                               int32_t g, int32_t nv, float* grad_logits, float* grad_features, float* grad_detail,
                               float* grad_codes, float* grad_w, float* grad_b,
                               float* grad_density, float* grad_table, int32_t threads) {
  const Kernel a = make_kernel(features, detail, codes, bias, nullptr, shut, w, nullptr, density, table,
                               density_variation, temperature, n, d, k, g, nv);
  const Sums at(a);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // One block of sums per chunk, added in chunk order: the result does not depend on the threads.
  std::vector<float> partial(static_cast<size_t>(at.size) * chunks, 0.0f);
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c)
    backward_points(a, c * kChunk, std::min(n, (c + 1) * kChunk), slot, variation, sigma, grad_sigma, grad_geo,
                    scales, grad_logits, grad_features, grad_detail, partial.data() + c * at.size);
  std::vector<float> total(at.size);
  for (int64_t i = 0; i < at.size; ++i) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[c * at.size + i];
    total[i] = static_cast<float>(sum);
  }
  std::copy(total.begin() + at.codes, total.begin() + at.w, grad_codes);
  if (nv) {
    std::copy(total.begin() + at.w, total.begin() + at.b, grad_w);
    std::copy(total.begin() + at.b, total.begin() + at.density, grad_b);
  }
  std::copy(total.begin() + at.density, total.begin() + at.table, grad_density);
  std::copy(total.begin() + at.table, total.end(), grad_table);
}

}  // extern "C"
