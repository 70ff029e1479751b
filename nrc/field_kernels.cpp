// A hash-grid field fused on CPU (OpenMP): contraction, hash grid, Linear-ReLU-Linear, and for a
// density field exp. nrc.field_cpu serves with it the proposal field (one output, exp) and the
// scene encoder's feature MLP (the code features, no exp). The torch modules are its reference.
//
// Points are processed in blocks of kLanes held as structure-of-arrays, so that every loop but the
// table reads runs over the lanes and vectorises. The backward recomputes a block's features
// instead of storing them, then hands the features' gradients to grid_core.h's table scatter.
#include <algorithm>
#include <cmath>
#include <vector>

#include "hashgrid/grid_core.h"

namespace {

constexpr int64_t kMaxInputs = 64, kMaxHidden = 128, kMaxOutputs = 64;
constexpr int64_t kChunkBlocks = 16;  // blocks whose parameter gradients are summed together

struct Mlp {
  const float* w1;  // (hidden, inputs), nn.Linear's layout
  const float* b1;
  const float* w2;  // (outputs, hidden)
  const float* b2;
  int64_t inputs, hidden, outputs;
  bool density;        // one output, returned as exp(output + density_offset)
  float density_offset;
};

// nrc.sampling.unit_cube_from_normalised in torch's order of float operations.
inline void unit_cube(const float* x, float* u) {
  float norm = std::max(std::max(std::fabs(x[0]), std::fabs(x[1])), std::fabs(x[2]));
  norm = std::max(norm, 1e-12f);
  for (int d = 0; d < 3; ++d) {
    const float y = norm <= 1.0f ? x[d] : (2.0f - 1.0f / norm) * x[d] / norm;
    u[d] = std::min(std::max((y + 2.0f) / 4.0f, 0.0f), 1.0f);
  }
}

struct Block {
  float u[3][kLanes];
  std::vector<float> h, a, out;  // (inputs | hidden | outputs, kLanes): features, pre-activations, outputs
  explicit Block(const Mlp& mlp) : h(mlp.inputs * kLanes), a(mlp.hidden * kLanes), out(mlp.outputs * kLanes) {}
};

// out[j] = b[j] + sum_k w[j, k] x[k] over a block's lanes (rows of kLanes), x = in or ReLU(in).
inline void lane_linear(const float* w, const float* b, int64_t n_in, int64_t n_out, const float* in, bool relu_input,
                        float* out) {
  for (int64_t j = 0; j < n_out; ++j) {
    float* o = out + j * kLanes;
    for (int i = 0; i < kLanes; ++i) o[i] = b[j];
    for (int64_t k = 0; k < n_in; ++k) {
      const float wk = w[j * n_in + k];
      const float* x = in + k * kLanes;
      for (int i = 0; i < kLanes; ++i) o[i] += wk * (relu_input ? std::max(x[i], 0.0f) : x[i]);
    }
  }
}

// Features, pre-activations and outputs (before exp) of points [start, start + count); a block's
// tail lanes repeat its last point and are never stored.
template <int F>
void field_block(const float* x, int64_t start, int64_t count, const float* table, const Level* levels, const Grid& g,
                 const Mlp& mlp, Block& block) {
  for (int i = 0; i < kLanes; ++i) {
    float u[3];
    unit_cube(x + 3 * (start + std::min<int64_t>(i, count - 1)), u);
    for (int d = 0; d < 3; ++d) block.u[d][i] = u[d];
  }
  for (int64_t l = 0; l < g.n_levels; ++l) {
    const Level& level = levels[l];
    uint32_t entries[8][kLanes];
    float weights[8][kLanes];
    if (!level.dense && level.pow2) {
      hashed_corners(block.u, level, g.smoothstep, entries, weights);
    } else {
      for (int i = 0; i < kLanes; ++i) {
        Axis a[3];
        for (int d = 0; d < 3; ++d) a[d] = axis(block.u[d][i], level, g.smoothstep);
        uint32_t e[8];
        float w[8];
        corners<3>(a, level, e, w);
        for (int c = 0; c < 8; ++c) {
          entries[c][i] = e[c];
          weights[c][i] = w[c];
        }
      }
    }
    const float* values_of_level = table + level.offset * F;
    float* h = block.h.data() + l * F * kLanes;
    std::fill(h, h + F * kLanes, 0.0f);
    for (int c = 0; c < 8; ++c)
      for (int i = 0; i < kLanes; ++i)
        for (int f = 0; f < F; ++f)
          h[f * kLanes + i] += weights[c][i] * values_of_level[static_cast<int64_t>(entries[c][i]) * F + f];
  }
  lane_linear(mlp.w1, mlp.b1, mlp.inputs, mlp.hidden, block.h.data(), false, block.a.data());
  lane_linear(mlp.w2, mlp.b2, mlp.hidden, mlp.outputs, block.a.data(), true, block.out.data());
}

Level* levels_of(const Grid& g, Level* levels) {
  for (int64_t l = 0; l < g.n_levels; ++l) levels[l] = level_of(g, l);
  return levels;
}

// Points [start, start + kLanes) of fused_forward.
template <int F>
ODIN_TARGETS void forward_block(const float* x, const float* table, const Mlp& mlp, float* out, int64_t n,
                                const Grid& g, const Level* levels, int64_t start, Block& block) {
  const int64_t count = std::min<int64_t>(kLanes, n - start);
  field_block<F>(x, start, count, table, levels, g, mlp, block);
  if (mlp.density) {
    for (int64_t i = 0; i < count; ++i) out[start + i] = std::exp(block.out[i] + mlp.density_offset);
  } else {
    for (int64_t i = 0; i < count; ++i)
      for (int64_t m = 0; m < mlp.outputs; ++m) out[(start + i) * mlp.outputs + m] = block.out[m * kLanes + i];
  }
}

// out: (N,) densities or (N, outputs) features.
template <int F>
void fused_forward(const float* x, const float* table, const Mlp& mlp, float* out, int64_t n, const Grid& g,
                   int threads) {
  Level levels[kMaxLevels];
  levels_of(g, levels);
#pragma omp parallel num_threads(threads)
  {
    Block block(mlp);
#pragma omp for schedule(static)
    for (int64_t start = 0; start < n; start += kLanes)
      forward_block<F>(x, table, mlp, out, n, g, levels, start, block);
  }
}

// sum_i a[i] * b[i] over a block's lanes, in 8 independent partial sums (they vectorise).
inline float lane_dot(const float* a, const float* b) {
  float partial[8] = {};
  for (int i = 0; i < kLanes; i += 8)
    for (int k = 0; k < 8; ++k) partial[k] += a[i + k] * b[i + k];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

inline float lane_sum(const float* a) {
  float partial[8] = {};
  for (int i = 0; i < kLanes; i += 8)
    for (int k = 0; k < 8; ++k) partial[k] += a[i + k];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// One block's share of fused_backward: its parameter gradients added to ``mine``, its features'
// gradients into grad_h and its unit-cube positions into u_all.
template <int F>
ODIN_TARGETS void backward_block(const float* x, const float* table, const Mlp& mlp, const float* grad_out, double* mine,
                                 float* u_all, float* grad_h, int64_t n, const Grid& g, const Level* levels,
                                 int64_t start, Block& block, float* g_out, float* g_a, float* relu) {
  const int64_t inputs = mlp.inputs, hidden = mlp.hidden, outputs = mlp.outputs;
  const int64_t n_w1 = hidden * inputs;
  const int64_t count = std::min<int64_t>(kLanes, n - start);
  field_block<F>(x, start, count, table, levels, g, mlp, block);
  // The tail lanes get no gradient.
  for (int64_t m = 0; m < outputs; ++m)
    for (int i = 0; i < kLanes; ++i) {
      float grad = i < count ? grad_out[(start + i) * outputs + m] : 0.0f;
      // trunc_exp's gradient: exp of the clamped argument.
      if (mlp.density)
        grad *= std::exp(std::min(std::max(block.out[i] + mlp.density_offset, -15.0f), 15.0f));
      g_out[m * kLanes + i] = grad;
    }
  std::fill(g_a, g_a + hidden * kLanes, 0.0f);
  for (int64_t m = 0; m < outputs; ++m) {
    const float* go = g_out + m * kLanes;
    mine[n_w1 + hidden + outputs * hidden + m] += lane_sum(go);
    for (int64_t j = 0; j < hidden; ++j) {
      const float* a = block.a.data() + j * kLanes;
      for (int i = 0; i < kLanes; ++i) relu[i] = std::max(a[i], 0.0f);
      mine[n_w1 + hidden + m * hidden + j] += lane_dot(go, relu);
      const float w = mlp.w2[m * hidden + j];
      float* ga = g_a + j * kLanes;
      for (int i = 0; i < kLanes; ++i) ga[i] += w * go[i];
    }
  }
  for (int64_t j = 0; j < hidden; ++j) {
    // ReLU passes no gradient where its output is 0.
    const float* a = block.a.data() + j * kLanes;
    float* ga = g_a + j * kLanes;
    for (int i = 0; i < kLanes; ++i) ga[i] = a[i] > 0.0f ? ga[i] : 0.0f;
    mine[n_w1 + j] += lane_sum(ga);
    for (int64_t k = 0; k < inputs; ++k) mine[j * inputs + k] += lane_dot(ga, block.h.data() + k * kLanes);
  }
  for (int64_t k = 0; k < inputs; ++k) {
    float g_h[kLanes] = {};
    for (int64_t j = 0; j < hidden; ++j) {
      const float w = mlp.w1[j * inputs + k];
      const float* ga = g_a + j * kLanes;
      for (int i = 0; i < kLanes; ++i) g_h[i] += w * ga[i];
    }
    const int64_t l = k / F, f = k % F;
    for (int64_t i = 0; i < count; ++i) grad_h[(l * n + start + i) * F + f] = g_h[i];
  }
  for (int64_t i = 0; i < count; ++i)
    for (int d = 0; d < 3; ++d) u_all[3 * (start + i) + d] = block.u[d][i];
}

// Gradients of the MLP (overwritten) and of the table (overwritten, by backward_table from the
// features' gradients) given grad_out, shaped like fused_forward's out; u and grad_h are (N, 3)
// and level-major (L, N, F) scratch.
template <int F>
void fused_backward(const float* x, const float* table, const Mlp& mlp, const float* grad_out, float* grad_table,
                    float* grad_w1, float* grad_b1, float* grad_w2, float* grad_b2, float* u_all, float* grad_h,
                    int64_t n, const Grid& g, int threads) {
  Level levels[kMaxLevels];
  levels_of(g, levels);
  const int64_t inputs = mlp.inputs, hidden = mlp.hidden, outputs = mlp.outputs;
  // [w1 | b1 | w2 | b2], summed over a block's lanes in float, over a chunk's blocks in double, then
  // over chunks in their order: the same bits at any thread count.
  const int64_t n_w1 = hidden * inputs, n_params = n_w1 + hidden + outputs * hidden + outputs;
  const int64_t chunk_points = kChunkBlocks * kLanes, n_chunks = (n + chunk_points - 1) / chunk_points;
  std::vector<double> sums(n_chunks * n_params, 0.0);
#pragma omp parallel num_threads(threads)
  {
    Block block(mlp);
    std::vector<float> g_out(outputs * kLanes), g_a(hidden * kLanes), relu(kLanes);
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk)
      for (int64_t start = chunk * chunk_points; start < std::min(n, (chunk + 1) * chunk_points); start += kLanes)
        backward_block<F>(x, table, mlp, grad_out, sums.data() + chunk * n_params, u_all, grad_h, n, g, levels, start,
                          block, g_out.data(), g_a.data(), relu.data());
  }
  std::vector<double> totals(n_params, 0.0);
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk)
    for (int64_t p = 0; p < n_params; ++p) totals[p] += sums[chunk * n_params + p];
  float* grads[4] = {grad_w1, grad_b1, grad_w2, grad_b2};
  const int64_t sizes[4] = {n_w1, hidden, outputs * hidden, outputs};
  for (int64_t part = 0, p = 0; part < 4; ++part)
    for (int64_t q = 0; q < sizes[part]; ++q, ++p) grads[part][q] = static_cast<float>(totals[p]);
  backward_table<3, F>(u_all, grad_h, grad_table, n, g, threads);
}

bool supported(const Mlp& mlp, int d) {
  return d == 3 && mlp.inputs <= kMaxInputs && mlp.hidden <= kMaxHidden && mlp.outputs <= kMaxOutputs &&
         (!mlp.density || mlp.outputs == 1);
}

}  // namespace

// C ABI for ctypes (3-D points). Each returns 0, or 1 for an unsupported shape.
extern "C" {

int field_forward(const float* x, const float* table, const float* w1, const float* b1, const float* w2,
                  const float* b2, float* out, int64_t hidden, int64_t outputs, int density, float density_offset,
                  int64_t n, int d, int f, const double* scales, const int64_t* offsets, const int64_t* sizes,
                  const uint8_t* dense, const int64_t* resolutions, int64_t n_levels, int smoothstep, int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  const Mlp mlp{w1, b1, w2, b2, n_levels * f, hidden, outputs, density != 0, density_offset};
  if (!supported(mlp, d)) return 1;
  switch (f) {
    case 1: fused_forward<1>(x, table, mlp, out, n, g, threads); return 0;
    case 2: fused_forward<2>(x, table, mlp, out, n, g, threads); return 0;
    case 4: fused_forward<4>(x, table, mlp, out, n, g, threads); return 0;
    case 8: fused_forward<8>(x, table, mlp, out, n, g, threads); return 0;
  }
  return 1;
}

int field_backward(const float* x, const float* table, const float* w1, const float* b1, const float* w2,
                   const float* b2, const float* grad_out, float* grad_table, float* grad_w1, float* grad_b1,
                   float* grad_w2, float* grad_b2, float* u, float* grad_h, int64_t hidden, int64_t outputs, int density,
                   float density_offset, int64_t n, int d, int f, const double* scales, const int64_t* offsets,
                   const int64_t* sizes, const uint8_t* dense, const int64_t* resolutions, int64_t n_levels,
                   int smoothstep, int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  const Mlp mlp{w1, b1, w2, b2, n_levels * f, hidden, outputs, density != 0, density_offset};
  if (!supported(mlp, d)) return 1;
  prefer_huge_pages(grad_table, offsets[n_levels] * f * int64_t(sizeof(float)));
#define FIELD_BACKWARD(FF)                                                                                     \
  fused_backward<FF>(x, table, mlp, grad_out, grad_table, grad_w1, grad_b1, grad_w2, grad_b2, u, grad_h, n, g, \
                     threads)
  switch (f) {
    case 1: FIELD_BACKWARD(1); return 0;
    case 2: FIELD_BACKWARD(2); return 0;
    case 4: FIELD_BACKWARD(4); return 0;
    case 8: FIELD_BACKWARD(8); return 0;
  }
#undef FIELD_BACKWARD
  return 1;
}

}  // extern "C"
