// Fused CPU hash-grid kernels (OpenMP): forward, table gradient, position gradient.
//
// Built at first use by cpu_backend.py (nrc.native) and called through ctypes. Deliberately free
// of torch and Python headers: the build takes seconds, not minutes. The arithmetic is
// grid_core.h's.
//
// Threads never write the same memory: the forward and the position gradient split points
// (the forward as level-major (level, chunk) tasks, so that threads running together share one
// level's slice of the table in cache), the table gradient splits levels (each level owns a
// disjoint slice of the table: no atomics, no per-thread copies of the table).
#include "grid_core.h"

namespace {

constexpr int64_t kChunk = 8192;  // points per forward task

// Points [chunk * kChunk, ...) of level l into level-major out (L, N, F).
template <int D, int F>
ODIN_TARGETS void forward_task(const float* x, const float* table, float* out, int64_t n, const Grid& g, int64_t l,
                               int64_t chunk) {
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

// out is level-major (L, N, F).
template <int D, int F>
void forward(const float* x, const float* table, float* out, int64_t n, const Grid& g, int threads) {
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t task = 0; task < g.n_levels * n_chunks; ++task)
    forward_task<D, F>(x, table, out, n, g, task / n_chunks, task % n_chunks);
}

// grad_x of points [start, stop) from point-major grad_out (N, L * F).
template <int D, int F>
ODIN_TARGETS void backward_x_range(const float* x, const float* table, const float* grad_out, float* grad_x,
                                   const Grid& g, const Level* levels, int64_t start, int64_t stop) {
  for (int64_t i = start; i < stop; ++i) {
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

// grad_out is point-major (N, L * F); grad_x (N, D) is overwritten.
template <int D, int F>
void backward_x(const float* x, const float* table, const float* grad_out, float* grad_x, int64_t n,
                const Grid& g, int threads) {
  Level levels[kMaxLevels];
  for (int64_t l = 0; l < g.n_levels; ++l) levels[l] = level_of(g, l);
  constexpr int64_t kPoints = 256;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t start = 0; start < n; start += kPoints)
    backward_x_range<D, F>(x, table, grad_out, grad_x, g, levels, start, std::min(n, start + kPoints));
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

}  // extern "C"
