// The hash grid's arithmetic shared by the CPU kernels (cpu_kernels.cpp, nrc/field_kernels.cpp):
// a level's constants, corner entries and weights, the table gradient's scatter.
//
// Semantics are spec.py's, arithmetic the reference's step for step: pos = x * scale + 0.5
// formed in double and rounded once to float (an exact fma), weights and their products in
// float, indices in wrapping integer arithmetic whose low 32 bits are tcnn's uint32 ones. Only
// the order of the float sums over corners differs from the reference's bmm.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../targets.h"

namespace {


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

// One level's slice of the table gradient (overwritten) from level-major grad_out (L, N, F).
template <int D, int F>
ODIN_TARGETS void backward_table_level(const float* x, const float* grad_out, float* grad_table, int64_t n,
                                       const Grid& g, int64_t l) {
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

// grad_out is level-major (L, N, F); grad_table is overwritten.
template <int D, int F>
void backward_table(const float* x, const float* grad_out, float* grad_table, int64_t n, const Grid& g,
                    int threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t task = 0; task < g.n_levels; ++task)
    backward_table_level<D, F>(x, grad_out, grad_table, n, g, g.n_levels - 1 - task);  // finest (slowest) first
}

// The kernels work on blocks of kLanes points held as structure-of-arrays (one row of kLanes
// values per quantity), so that every loop except the table reads runs over the lanes and the
// compiler vectorises it; a block's tail lanes repeat its last point and are not stored.
constexpr int kLanes = 64;

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

}  // namespace
