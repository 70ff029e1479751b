// Fused CPU hash-grid kernels (OpenMP): forward, table gradient, position gradient; and the NRC
// proposal field (contraction, hash grid, one ReLU layer, exp) fused around them.
//
// Built at first use by cpu_backend.py (torch.utils.cpp_extension.load) and called through
// ctypes. Deliberately free of torch and Python headers: the build takes seconds, not minutes.
// Semantics are spec.py's, arithmetic the reference's step for step: pos = x * scale + 0.5
// formed in double and rounded once to float (an exact fma), weights and their products in
// float, indices in wrapping integer arithmetic whose low 32 bits are tcnn's uint32 ones. Only
// the order of the float sums over corners differs from the reference's bmm.
//
// Threads never write the same memory: the forward and the position gradient split points
// (the forward as level-major (level, chunk) tasks, so that threads running together share one
// level's slice of the table in cache), the table gradient splits levels (each level owns a
// disjoint slice of the table: no atomics, no per-thread copies of the table).
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kChunk = 8192;  // points per forward task
constexpr int64_t kBatch = 64;    // points whose corners are computed before they are gathered

struct Grid {
  const double* scales;
  const int64_t* offsets;
  const int64_t* sizes;
  const uint8_t* dense;
  const int64_t* resolutions;
  int64_t n_levels;
  bool smoothstep;
};

constexpr int kMaxLevels = 32;  // spec.py's (and tcnn's) limit

// One level's constants, read once per task instead of through the Grid's arrays for every
// corner (the compiler must reload those after each store to an int64 array that may alias them).
struct Level {
  double scale;
  int64_t offset, size, resolution;
  uint32_t mask;  // size - 1 when size is a power of two
  bool dense, pow2;
};

inline Level level_of(const Grid& g, int64_t l) {
  const int64_t size = g.sizes[l];
  const bool pow2 = (size & (size - 1)) == 0;
  return Level{g.scales[l], g.offsets[l], size, g.resolutions[l], pow2 ? static_cast<uint32_t>(size - 1) : 0u,
               g.dense[l] != 0, pow2};
}

struct Axis {
  int64_t cell;     // lower corner's cell along this axis
  float w, dw;      // weight of the upper corner, and d w / d frac
};

inline Axis axis(float x, const Level& level, bool smoothstep) {
  const float pos = static_cast<float>(static_cast<double>(x) * level.scale + 0.5);
  const float floor = std::floor(pos);
  const float frac = pos - floor;
  Axis a{static_cast<int64_t>(floor), frac, 1.0f};
  if (smoothstep) {
    a.w = frac * frac * (3.0f - 2.0f * frac);
    a.dw = 6.0f * frac * (1.0f - frac);
  }
  return a;
}

// Entry (within the level) and weight of every corner (bit d of the corner number: upper along
// axis d). Hashed levels: tcnn's uint32 xor of cell * prime, masked (their size is 2^log2T).
// Dense levels: c_0 + c_1 r + c_2 r^2, its low 32 bits modulo the size.
template <int D>
inline void corners(const Axis* a, const Level& level, uint32_t* entries, float* weights) {
  if (!level.dense && level.pow2) {
    constexpr uint32_t kPrimes[3] = {1u, 2654435761u, 805459861u};
    uint32_t lo[D], hi[D];
    for (int d = 0; d < D; ++d) {
      lo[d] = static_cast<uint32_t>(a[d].cell) * kPrimes[d];
      hi[d] = static_cast<uint32_t>(a[d].cell + 1) * kPrimes[d];
    }
    for (int c = 0; c < (1 << D); ++c) {
      uint32_t index = (c & 1) ? hi[0] : lo[0];
      for (int d = 1; d < D; ++d) index ^= ((c >> d) & 1) ? hi[d] : lo[d];
      entries[c] = index & level.mask;
    }
  } else {
    int64_t lo[D], hi[D], stride = 1;
    for (int d = 0; d < D; ++d) {
      // Hashed levels of another size (not made by spec.py) would need the primes here.
      const int64_t s = level.dense ? stride : (d == 0 ? 1 : (d == 1 ? 2654435761LL : 805459861LL));
      lo[d] = a[d].cell * s;
      hi[d] = (a[d].cell + 1) * s;
      stride *= level.resolution;
    }
    for (int c = 0; c < (1 << D); ++c) {
      int64_t index = (c & 1) ? hi[0] : lo[0];
      for (int d = 1; d < D; ++d) {
        const int64_t term = ((c >> d) & 1) ? hi[d] : lo[d];
        index = level.dense ? index + term : index ^ term;
      }
      uint64_t low = static_cast<uint64_t>(index) & 0xFFFFFFFFull;
      const uint64_t size = static_cast<uint64_t>(level.size);
      // A corner is at most one past the grid, so one subtraction usually replaces the division;
      // the modulo keeps unchecked positions outside [0, 1] inside the table too.
      if (level.pow2) low &= size - 1;
      else if (low >= size) low = low - size < size ? low - size : low % size;
      entries[c] = static_cast<uint32_t>(low);
    }
  }
  for (int c = 0; c < (1 << D); ++c) {
    float w = (c & 1) ? a[0].w : 1.0f - a[0].w;
    for (int d = 1; d < D; ++d) w = w * (((c >> d) & 1) ? a[d].w : 1.0f - a[d].w);
    weights[c] = w;
  }
}

template <int D>
inline void point_corners(const float* xn, const Level& level, bool smoothstep, uint32_t* entries, float* weights) {
  Axis a[D];
  for (int d = 0; d < D; ++d) a[d] = axis(xn[d], level, smoothstep);
  corners<D>(a, level, entries, weights);
}

// The outputs are fresh allocations (the table gradient is ~49 MB at T = 2^19, F = 2), whose
// first touch costs one page fault per 4 kB page (filling a fresh one took as long as the whole
// scatter); asking for transparent huge pages first (where the system allows it, else a no-op)
// made forward+backward at 2^16 points about 25% faster.
inline void prefer_huge_pages(void* data, int64_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
}

// Ask for the rows of one point's corners now, so that they arrive while the other points of the
// batch are computed: the gathers and scatters are cache misses (a hashed level's slice is 4 MB at
// T = 2^19, F = 2); measured 1.8x faster forward and table gradient with it (2^16 points).
template <int D, int F, int WRITE>
inline void prefetch(const float* base, const uint32_t* entries) {
  for (int c = 0; c < (1 << D); ++c) __builtin_prefetch(base + static_cast<int64_t>(entries[c]) * F, WRITE);
}

// out is level-major (L, N, F).
template <int D, int F>
void forward(const float* x, const float* table, float* out, int64_t n, const Grid& g, int threads) {
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t task = 0; task < g.n_levels * n_chunks; ++task) {
    const int64_t l = task / n_chunks, chunk = task % n_chunks;
    const Level level = level_of(g, l);
    const float* values_of_level = table + level.offset * F;
    uint32_t entries[kBatch << D];
    float weights[kBatch << D];
    const int64_t end = std::min(n, (chunk + 1) * kChunk);
    for (int64_t start = chunk * kChunk; start < end; start += kBatch) {
      const int64_t stop = std::min(end, start + kBatch);
      // All corners first (prefetching their rows), then the gathers with no arithmetic
      // between them: many cache misses in flight at once.
      for (int64_t i = start; i < stop; ++i) {
        const int64_t k = (i - start) << D;
        point_corners<D>(x + i * D, level, g.smoothstep, entries + k, weights + k);
        prefetch<D, F, 0>(values_of_level, entries + k);
      }
      float* rows = out + (l * n + start) * F;
      for (int64_t i = start; i < stop; ++i) {
        float acc[F] = {};
        for (int c = 0; c < (1 << D); ++c) {
          const int64_t k = ((i - start) << D) + c;
          const float* values = values_of_level + static_cast<int64_t>(entries[k]) * F;
          for (int f = 0; f < F; ++f) acc[f] += weights[k] * values[f];
        }
        for (int f = 0; f < F; ++f) rows[(i - start) * F + f] = acc[f];
      }
    }
  }
}

// grad_out is level-major (L, N, F); grad_table is overwritten.
template <int D, int F>
void backward_table(const float* x, const float* grad_out, float* grad_table, int64_t n, const Grid& g,
                    int threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t task = 0; task < g.n_levels; ++task) {
    const int64_t l = g.n_levels - 1 - task;  // finest (slowest) levels first, for balance
    const Level level = level_of(g, l);
    float* grads_of_level = grad_table + level.offset * F;
    std::fill(grads_of_level, grad_table + g.offsets[l + 1] * F, 0.0f);
    uint32_t entries[kBatch << D];
    float weights[kBatch << D];
    for (int64_t start = 0; start < n; start += kBatch) {
      const int64_t stop = std::min(n, start + kBatch);
      for (int64_t i = start; i < stop; ++i) {
        const int64_t k = (i - start) << D;
        point_corners<D>(x + i * D, level, g.smoothstep, entries + k, weights + k);
        prefetch<D, F, 1>(grads_of_level, entries + k);
      }
      for (int64_t i = start; i < stop; ++i) {
        const float* grad = grad_out + (l * n + i) * F;
        for (int c = 0; c < (1 << D); ++c) {
          const int64_t k = ((i - start) << D) + c;
          float* target = grads_of_level + static_cast<int64_t>(entries[k]) * F;
          for (int f = 0; f < F; ++f) target[f] += weights[k] * grad[f];
        }
      }
    }
  }
}

// grad_out is point-major (N, L * F); grad_x (N, D) is overwritten.
template <int D, int F>
void backward_x(const float* x, const float* table, const float* grad_out, float* grad_x, int64_t n,
                const Grid& g, int threads) {
  Level levels[kMaxLevels];
  for (int64_t l = 0; l < g.n_levels; ++l) levels[l] = level_of(g, l);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    float total[D] = {};
    for (int64_t l = 0; l < g.n_levels; ++l) {
      const Level& level = levels[l];
      Axis a[D];
      for (int d = 0; d < D; ++d) a[d] = axis(x[i * D + d], level, g.smoothstep);
      uint32_t entries[1 << D];
      float weights[1 << D];
      corners<D>(a, level, entries, weights);
      const float* values_of_level = table + level.offset * F;
      const float* grad = grad_out + (i * g.n_levels + l) * F;
      float slope[D] = {};
      for (int c = 0; c < (1 << D); ++c) {
        float value = 0.0f;
        for (int f = 0; f < F; ++f) value += grad[f] * values_of_level[static_cast<int64_t>(entries[c]) * F + f];
        // d weight / d w_d: the other axes' factors, negated for the lower corner.
        for (int d = 0; d < D; ++d) {
          float others = ((c >> d) & 1) ? value : -value;
          for (int e = 0; e < D; ++e)
            if (e != d) others = others * (((c >> e) & 1) ? a[e].w : 1.0f - a[e].w);
          slope[d] += others;
        }
      }
      // d frac / d x = scale (pos = x * scale + 0.5).
      for (int d = 0; d < D; ++d) total[d] += slope[d] * a[d].dw * static_cast<float>(level.scale);
    }
    for (int d = 0; d < D; ++d) grad_x[i * D + d] = total[d];
  }
}

// The proposal field fused: contraction, hash grid, one ReLU layer, exp (nrc.field.ProposalField).
// Per point the hash grid gives L*F features and the MLP a density logit; the torch version
// spends its time on a dozen (N, 16)-sized passes, the kernel reads each point once each way.
constexpr int kMaxProposalInputs = 64, kMaxProposalHidden = 128;

struct ProposalMlp {
  const float* w1;  // (hidden, inputs), nn.Linear's layout
  const float* b1;
  const float* w2;  // (hidden,)
  const float* b2;  // (1,)
  int64_t hidden, inputs;
  float logit_offset;  // added to the logit before exp (the field's initial density)
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

// The kernels work on blocks of kLanes points held as structure-of-arrays (one row of kLanes
// values per quantity), so that every loop except the table reads runs over the lanes and the
// compiler vectorises it; a block's tail lanes repeat its last point and are not stored.
constexpr int kLanes = 64;

struct ProposalBlock {
  float u[3][kLanes];
  float logit[kLanes];
  std::vector<float> h, a;  // (inputs, kLanes) features and (hidden, kLanes) pre-activations
  explicit ProposalBlock(const ProposalMlp& mlp) : h(mlp.inputs * kLanes), a(mlp.hidden * kLanes) {}
};

// corners<3> of a block of points at a hashed level, written lane by lane so that it vectorises:
// positions in the unit cube give pos >= 0.5, where truncation is the floor.
inline void hashed_corners(const float (*u)[kLanes], const Level& level, bool smoothstep, uint32_t (*entries)[kLanes],
                           float (*weights)[kLanes]) {
  constexpr uint32_t kPrimes[3] = {1u, 2654435761u, 805459861u};
  uint32_t lo[3][kLanes], hi[3][kLanes];
  float w[3][kLanes];
  for (int d = 0; d < 3; ++d)
    for (int i = 0; i < kLanes; ++i) {
      const float pos = static_cast<float>(static_cast<double>(u[d][i]) * level.scale + 0.5);
      const int32_t cell = static_cast<int32_t>(pos);
      const float frac = pos - static_cast<float>(cell);
      w[d][i] = smoothstep ? frac * frac * (3.0f - 2.0f * frac) : frac;
      lo[d][i] = static_cast<uint32_t>(cell) * kPrimes[d];
      hi[d][i] = static_cast<uint32_t>(cell + 1) * kPrimes[d];
    }
  for (int c = 0; c < 8; ++c)
    for (int i = 0; i < kLanes; ++i) {
      const uint32_t index = ((c & 1) ? hi[0][i] : lo[0][i]) ^ ((c & 2) ? hi[1][i] : lo[1][i]) ^
                             ((c & 4) ? hi[2][i] : lo[2][i]);
      entries[c][i] = index & level.mask;
      weights[c][i] = ((c & 1) ? w[0][i] : 1.0f - w[0][i]) * ((c & 2) ? w[1][i] : 1.0f - w[1][i]) *
                      ((c & 4) ? w[2][i] : 1.0f - w[2][i]);
    }
}

// Features, pre-activations and density logits of points [start, start + count).
template <int F>
void proposal_block(const float* x, int64_t start, int64_t count, const float* table, const Level* levels,
                    const Grid& g, const ProposalMlp& mlp, ProposalBlock& block) {
  for (int i = 0; i < kLanes; ++i) {
    const int64_t p = start + std::min<int64_t>(i, count - 1);
    float u[3];
    unit_cube(x + 3 * p, u);
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
  for (int i = 0; i < kLanes; ++i) block.logit[i] = mlp.b2[0] + mlp.logit_offset;
  for (int64_t j = 0; j < mlp.hidden; ++j) {
    float* a = block.a.data() + j * kLanes;
    for (int i = 0; i < kLanes; ++i) a[i] = mlp.b1[j];
    for (int64_t k = 0; k < mlp.inputs; ++k) {
      const float w = mlp.w1[j * mlp.inputs + k];
      const float* h = block.h.data() + k * kLanes;
      for (int i = 0; i < kLanes; ++i) a[i] += w * h[i];
    }
    const float w2 = mlp.w2[j];
    for (int i = 0; i < kLanes; ++i) block.logit[i] += w2 * std::max(a[i], 0.0f);
  }
}

template <int F>
void proposal_forward(const float* x, const float* table, const ProposalMlp& mlp, float* sigma, int64_t n,
                      const Grid& g, int threads) {
  Level levels[kMaxLevels];
  for (int64_t l = 0; l < g.n_levels; ++l) levels[l] = level_of(g, l);
#pragma omp parallel num_threads(threads)
  {
    ProposalBlock block(mlp);
#pragma omp for schedule(static)
    for (int64_t start = 0; start < n; start += kLanes) {
      const int64_t count = std::min<int64_t>(kLanes, n - start);
      proposal_block<F>(x, start, count, table, levels, g, mlp, block);
      for (int64_t i = 0; i < count; ++i) sigma[start + i] = std::exp(block.logit[i]);
    }
  }
}

// Gradients of the MLP (overwritten) and of the table (overwritten, by backward_table from the
// features' gradients); u and grad_h are (N, 3) and level-major (L, N, F) scratch.
template <int F>
void proposal_backward(const float* x, const float* table, const ProposalMlp& mlp, const float* grad_sigma,
                       float* grad_table, float* grad_w1, float* grad_b1, float* grad_w2, float* grad_b2, float* u_all,
                       float* grad_h, int64_t n, const Grid& g, int threads) {
  Level levels[kMaxLevels];
  for (int64_t l = 0; l < g.n_levels; ++l) levels[l] = level_of(g, l);
  const int64_t hidden = mlp.hidden, inputs = mlp.inputs;
  // Parameter gradients: [w1 (hidden, inputs) | b1 | w2 | b2], summed per lane, then over lanes
  // and threads in double.
  const int64_t n_params = hidden * inputs + 2 * hidden + 1;
  std::vector<double> totals(n_params, 0.0);
#pragma omp parallel num_threads(threads)
  {
    ProposalBlock block(mlp);
    std::vector<float> lanes(n_params * kLanes, 0.0f), g_a(hidden * kLanes);
    float* g_w1 = lanes.data();
    float* g_b1 = g_w1 + hidden * inputs * kLanes;
    float* g_w2 = g_b1 + hidden * kLanes;
    float* g_b2 = g_w2 + hidden * kLanes;
#pragma omp for schedule(static)
    for (int64_t start = 0; start < n; start += kLanes) {
      const int64_t count = std::min<int64_t>(kLanes, n - start);
      proposal_block<F>(x, start, count, table, levels, g, mlp, block);
      float g_logit[kLanes];
      // trunc_exp's gradient: exp of the clamped logit; the repeated tail lanes get none.
      for (int i = 0; i < kLanes; ++i)
        g_logit[i] = i < count ? grad_sigma[start + i] * std::exp(std::min(std::max(block.logit[i], -15.0f), 15.0f))
                               : 0.0f;
      for (int i = 0; i < kLanes; ++i) g_b2[i] += g_logit[i];
      for (int64_t j = 0; j < hidden; ++j) {
        const float* a = block.a.data() + j * kLanes;
        float* ga = g_a.data() + j * kLanes;
        const float w2 = mlp.w2[j];
        for (int i = 0; i < kLanes; ++i) {
          // ReLU passes no gradient where its output is 0.
          g_w2[j * kLanes + i] += g_logit[i] * std::max(a[i], 0.0f);
          ga[i] = a[i] > 0.0f ? g_logit[i] * w2 : 0.0f;
          g_b1[j * kLanes + i] += ga[i];
        }
        for (int64_t k = 0; k < inputs; ++k) {
          const float* h = block.h.data() + k * kLanes;
          float* gw = g_w1 + (j * inputs + k) * kLanes;
          for (int i = 0; i < kLanes; ++i) gw[i] += ga[i] * h[i];
        }
      }
      for (int64_t k = 0; k < inputs; ++k) {
        float g_h[kLanes] = {};
        for (int64_t j = 0; j < hidden; ++j) {
          const float w = mlp.w1[j * inputs + k];
          const float* ga = g_a.data() + j * kLanes;
          for (int i = 0; i < kLanes; ++i) g_h[i] += w * ga[i];
        }
        const int64_t l = k / F, f = k % F;
        for (int64_t i = 0; i < count; ++i) grad_h[(l * n + start + i) * F + f] = g_h[i];
      }
      for (int64_t i = 0; i < count; ++i)
        for (int d = 0; d < 3; ++d) u_all[3 * (start + i) + d] = block.u[d][i];
    }
#pragma omp critical
    for (int64_t p = 0; p < n_params; ++p)
      for (int i = 0; i < kLanes; ++i) totals[p] += lanes[p * kLanes + i];
  }
  for (int64_t p = 0; p < hidden * inputs; ++p) grad_w1[p] = static_cast<float>(totals[p]);
  for (int64_t j = 0; j < hidden; ++j) {
    grad_b1[j] = static_cast<float>(totals[hidden * inputs + j]);
    grad_w2[j] = static_cast<float>(totals[hidden * inputs + hidden + j]);
  }
  grad_b2[0] = static_cast<float>(totals[n_params - 1]);
  backward_table<3, F>(u_all, grad_h, grad_table, n, g, threads);
}

template <template <int, int> class Op, typename... Args>
int dispatch(int d, int f, Args... args) {
#define HASHGRID_CASE(DD, FF) \
  if (d == DD && f == FF) return Op<DD, FF>::run(args...), 0;
  HASHGRID_CASE(2, 1) HASHGRID_CASE(2, 2) HASHGRID_CASE(2, 4) HASHGRID_CASE(2, 8)
  HASHGRID_CASE(3, 1) HASHGRID_CASE(3, 2) HASHGRID_CASE(3, 4) HASHGRID_CASE(3, 8)
#undef HASHGRID_CASE
  return 1;
}

template <int D, int F> struct Forward { template <typename... A> static void run(A... a) { forward<D, F>(a...); } };
template <int D, int F> struct BackwardTable {
  template <typename... A> static void run(A... a) { backward_table<D, F>(a...); }
};
template <int D, int F> struct BackwardX { template <typename... A> static void run(A... a) { backward_x<D, F>(a...); } };

}  // namespace

// C ABI for ctypes. Each returns 0, or 1 for an unsupported (D, F).
extern "C" {

// Point-major (N, L, F) <-> level-major (L, N, F), in parallel over blocks of points: torch's
// copy of the transposed view took as long as a kernel at 2^18 points.
void hashgrid_transpose(const float* src, float* dst, int64_t n, int64_t n_levels, int f, int to_point_major,
                        int threads) {
  constexpr int64_t kBlock = 256;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t stop = std::min(n, start + kBlock);
    for (int64_t level = 0; level < n_levels; ++level)
      for (int64_t i = start; i < stop; ++i)
        for (int k = 0; k < f; ++k) {
          const int64_t point_major = (i * n_levels + level) * f + k, level_major = (level * n + i) * f + k;
          if (to_point_major) dst[point_major] = src[level_major];
          else dst[level_major] = src[point_major];
        }
  }
}

int hashgrid_forward(const float* x, const float* table, float* out, int64_t n, int d, int f, const double* scales,
                     const int64_t* offsets, const int64_t* sizes, const uint8_t* dense, const int64_t* resolutions,
                     int64_t n_levels, int smoothstep, int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  prefer_huge_pages(out, n * n_levels * f * int64_t(sizeof(float)));
  return dispatch<Forward>(d, f, x, table, out, n, g, threads);
}

int hashgrid_backward_table(const float* x, const float* grad_out, float* grad_table, int64_t n, int d, int f,
                            const double* scales, const int64_t* offsets, const int64_t* sizes, const uint8_t* dense,
                            const int64_t* resolutions, int64_t n_levels, int smoothstep, int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  prefer_huge_pages(grad_table, offsets[n_levels] * f * int64_t(sizeof(float)));
  return dispatch<BackwardTable>(d, f, x, grad_out, grad_table, n, g, threads);
}

int hashgrid_backward_x(const float* x, const float* table, const float* grad_out, float* grad_x, int64_t n, int d,
                        int f, const double* scales, const int64_t* offsets, const int64_t* sizes,
                        const uint8_t* dense, const int64_t* resolutions, int64_t n_levels, int smoothstep,
                        int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  return dispatch<BackwardX>(d, f, x, table, grad_out, grad_x, n, g, threads);
}

// The fused proposal field (3-D points only). Each returns 0, or 1 for an unsupported shape.
int proposal_density_forward(const float* x, const float* table, const float* w1, const float* b1, const float* w2,
                             const float* b2, float* sigma, int64_t hidden, float logit_offset, int64_t n, int d, int f,
                             const double* scales, const int64_t* offsets, const int64_t* sizes, const uint8_t* dense,
                             const int64_t* resolutions, int64_t n_levels, int smoothstep, int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  const ProposalMlp mlp{w1, b1, w2, b2, hidden, n_levels * f, logit_offset};
  if (d != 3 || hidden > kMaxProposalHidden || mlp.inputs > kMaxProposalInputs) return 1;
  switch (f) {
    case 1: proposal_forward<1>(x, table, mlp, sigma, n, g, threads); return 0;
    case 2: proposal_forward<2>(x, table, mlp, sigma, n, g, threads); return 0;
    case 4: proposal_forward<4>(x, table, mlp, sigma, n, g, threads); return 0;
    case 8: proposal_forward<8>(x, table, mlp, sigma, n, g, threads); return 0;
  }
  return 1;
}

int proposal_density_backward(const float* x, const float* table, const float* w1, const float* b1, const float* w2,
                              const float* b2, const float* grad_sigma, float* grad_table, float* grad_w1,
                              float* grad_b1, float* grad_w2, float* grad_b2, float* u, float* grad_h, int64_t hidden,
                              float logit_offset, int64_t n, int d, int f, const double* scales,
                              const int64_t* offsets, const int64_t* sizes, const uint8_t* dense,
                              const int64_t* resolutions, int64_t n_levels, int smoothstep, int threads) {
  const Grid g{scales, offsets, sizes, dense, resolutions, n_levels, smoothstep != 0};
  const ProposalMlp mlp{w1, b1, w2, b2, hidden, n_levels * f, logit_offset};
  if (d != 3 || hidden > kMaxProposalHidden || mlp.inputs > kMaxProposalInputs) return 1;
  prefer_huge_pages(grad_table, offsets[n_levels] * f * int64_t(sizeof(float)));
#define PROPOSAL_BACKWARD(FF) \
  proposal_backward<FF>(x, table, mlp, grad_sigma, grad_table, grad_w1, grad_b1, grad_w2, grad_b2, u, grad_h, n, g, threads)
  switch (f) {
    case 1: PROPOSAL_BACKWARD(1); return 0;
    case 2: PROPOSAL_BACKWARD(2); return 0;
    case 4: PROPOSAL_BACKWARD(4); return 0;
    case 8: PROPOSAL_BACKWARD(8); return 0;
  }
#undef PROPOSAL_BACKWARD
  return 1;
}

}  // extern "C"
