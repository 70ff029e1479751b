// A small ReLU MLP fused on CPU (OpenMP): Linear, ReLU, ..., Linear, forward and backward, for the
// narrow layers (<= 128 wide) of nrc's decoder and encoder. nrc.mlp_cpu is its plain PyTorch API;
// the torch nn.Sequential is its reference.
//
// Points are processed in blocks of kLanes held as structure-of-arrays (one row of kLanes values
// per unit), so that the loops run over the lanes and vectorise; torch instead makes a pass over
// an (N, width) tensor per product, bias, ReLU and their gradients. The backward recomputes a
// block's activations instead of storing them.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kLanes = 64;
// A product's inner loop keeps the sums of kTile lanes in registers, as GCC vector extensions of 8
// floats. The block functions are built twice (target_clones): for x86-64-v3 (AVX2 and FMA, where
// the CPU has them, chosen at load time) and for the baseline x86-64 (SSE2, which splits each vector
// in two); the build takes no -march, since its cache may be shared by machines of different kinds.
typedef float v8 __attribute__((vector_size(32)));
constexpr int kTileVectors = 8, kTile = 8 * kTileVectors;  // 8 independent FMA chains cover its latency
#define ODIN360_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))

inline v8 splat(float x) { return v8{} + x; }
inline v8 load(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, v8 v) { std::memcpy(p, &v, sizeof v); }
inline v8 relu(v8 z) { return z > splat(0.0f) ? z : splat(0.0f); }
// The gradient where the pre-activation is positive, else 0.
inline v8 relu_gradient(v8 grad, v8 pre) { return pre > splat(0.0f) ? grad : splat(0.0f); }

constexpr int64_t kMaxWidth = 128, kMaxLayers = 8;
constexpr int64_t kChunkBlocks = 16;  // blocks whose parameter gradients are summed together

struct Net {
  int64_t n_layers;
  const int64_t* widths;      // n_layers + 1: input width, then each layer's output width
  const float* const* weights;  // layer l: (widths[l + 1], widths[l]), nn.Linear's layout
  const float* const* biases;
};

// Activations of one block: acts[l] is layer l's input (ReLU applied), (widths[l], kLanes); the last
// entry holds the output. pre[l] keeps layer l's pre-activation for the ReLU's gradient.
struct Block {
  std::vector<std::vector<float>> acts, pre;
  explicit Block(const Net& net) {
    for (int64_t l = 0; l <= net.n_layers; ++l) {
      acts.emplace_back(net.widths[l] * kLanes);
      pre.emplace_back(net.widths[l] * kLanes);
    }
  }
};

// Rows [start, start + count) of x (N, widths[0]); a block's tail lanes repeat its last row.
ODIN360_CLONES
void block_forward(const float* x, int64_t start, int64_t count, const Net& net, Block& block) {
  const int64_t in = net.widths[0];
  float* a0 = block.acts[0].data();
  for (int i = 0; i < kLanes; ++i) {
    const float* row = x + (start + std::min<int64_t>(i, count - 1)) * in;
    for (int64_t k = 0; k < in; ++k) a0[k * kLanes + i] = row[k];
  }
  for (int64_t l = 0; l < net.n_layers; ++l) {
    const int64_t n_in = net.widths[l], n_out = net.widths[l + 1];
    const bool hidden = l + 1 < net.n_layers;
    const float* w = net.weights[l];
    for (int64_t j = 0; j < n_out; ++j) {
      float* pre = block.pre[l + 1].data() + j * kLanes;
      float* act = block.acts[l + 1].data() + j * kLanes;
      for (int lane = 0; lane < kLanes; lane += kTile) {
        v8 z[kTileVectors];
        for (int v = 0; v < kTileVectors; ++v) z[v] = splat(net.biases[l][j]);
        for (int64_t k = 0; k < n_in; ++k) {
          const float wk = w[j * n_in + k];  // a scalar times a vector: one broadcast
          const float* h = block.acts[l].data() + k * kLanes + lane;
          for (int v = 0; v < kTileVectors; ++v) z[v] += wk * load(h + 8 * v);
        }
        for (int v = 0; v < kTileVectors; ++v) {
          store(pre + lane + 8 * v, z[v]);
          store(act + lane + 8 * v, hidden ? relu(z[v]) : z[v]);
        }
      }
    }
  }
}

// sum += a * b (or a where b is null) folded onto 8 lanes: a parameter's gradient summed over a
// block, kept as 8 partial sums until the end (no horizontal sum per block).
inline void accumulate_lanes(float* sum, const float* a, const float* b) {
  v8 total = load(sum);
  for (int i = 0; i < kLanes; i += 8) total += b == nullptr ? load(a + i) : load(a + i) * load(b + i);
  store(sum, total);
}

// One block's share of the gradients: the parameters' added to ``sums`` (8 partial sums each, laid
// out by ``at``), the input's written to grad_x (when not null). grad and grad_below are
// (kMaxWidth, kLanes) scratch.
ODIN360_CLONES
void block_backward(const float* x, const float* grad_out, float* grad_x, int64_t start, int64_t count, const Net& net,
                    Block& block, float* sums, const int64_t* at, float* grad, float* grad_below) {
  const int64_t n_in = net.widths[0], n_out = net.widths[net.n_layers];
  block_forward(x, start, count, net, block);
  // The tail lanes get no gradient.
  for (int64_t m = 0; m < n_out; ++m)
    for (int i = 0; i < kLanes; ++i) grad[m * kLanes + i] = i < count ? grad_out[(start + i) * n_out + m] : 0.0f;
  for (int64_t l = net.n_layers - 1; l >= 0; --l) {
    const int64_t lo = net.widths[l], hi = net.widths[l + 1];
    const float* w = net.weights[l];
    float* g_w = sums + 8 * at[l];
    float* g_b = g_w + 8 * hi * lo;
    for (int64_t j = 0; j < hi; ++j) {
      const float* g = grad + j * kLanes;
      accumulate_lanes(g_b + 8 * j, g, nullptr);
      for (int64_t k = 0; k < lo; ++k) accumulate_lanes(g_w + 8 * (j * lo + k), g, block.acts[l].data() + k * kLanes);
    }
    if (l == 0 && grad_x == nullptr) break;
    for (int64_t k = 0; k < lo; ++k) {
      float* gb = grad_below + k * kLanes;
      const float* pre = block.pre[l].data() + k * kLanes;
      for (int lane = 0; lane < kLanes; lane += kTile) {
        v8 acc[kTileVectors] = {};
        for (int64_t j = 0; j < hi; ++j) {
          const float wk = w[j * lo + k];
          const float* g = grad + j * kLanes + lane;
          for (int v = 0; v < kTileVectors; ++v) acc[v] += wk * load(g + 8 * v);
        }
        // Through the ReLU below (not for the input): no gradient where its output is 0.
        for (int v = 0; v < kTileVectors; ++v)
          store(gb + lane + 8 * v, l == 0 ? acc[v] : relu_gradient(acc[v], load(pre + lane + 8 * v)));
      }
    }
    std::swap(grad, grad_below);
  }
  if (grad_x != nullptr)
    for (int64_t i = 0; i < count; ++i)
      for (int64_t k = 0; k < n_in; ++k) grad_x[(start + i) * n_in + k] = grad[k * kLanes + i];
}

bool supported(const Net& net) {
  if (net.n_layers < 1 || net.n_layers > kMaxLayers) return false;
  for (int64_t l = 0; l <= net.n_layers; ++l)
    if (net.widths[l] < 1 || net.widths[l] > kMaxWidth) return false;
  return true;
}

}  // namespace

// C ABI for ctypes. Each returns 0, or 1 for an unsupported shape.
extern "C" {

int mlp_forward(const float* x, float* out, int64_t n, int64_t n_layers, const int64_t* widths,
                const float* const* weights, const float* const* biases, int threads) {
  const Net net{n_layers, widths, weights, biases};
  if (!supported(net)) return 1;
  const int64_t n_out = widths[n_layers];
#pragma omp parallel num_threads(threads)
  {
    Block block(net);
#pragma omp for schedule(static)
    for (int64_t start = 0; start < n; start += kLanes) {
      const int64_t count = std::min<int64_t>(kLanes, n - start);
      block_forward(x, start, count, net, block);
      const float* result = block.acts[n_layers].data();
      for (int64_t i = 0; i < count; ++i)
        for (int64_t m = 0; m < n_out; ++m) out[(start + i) * n_out + m] = result[m * kLanes + i];
    }
  }
  return 0;
}

// grad_x (N, widths[0]) may be null (no input gradient); the parameters' gradients are overwritten.
int mlp_backward(const float* x, const float* grad_out, float* grad_x, int64_t n, int64_t n_layers,
                 const int64_t* widths, const float* const* weights, const float* const* biases,
                 float* const* grad_weights, float* const* grad_biases, int threads) {
  const Net net{n_layers, widths, weights, biases};
  if (!supported(net)) return 1;
  // Every parameter's gradient, [w_0 | b_0 | w_1 | b_1 | ...], as 8 partial float sums per chunk
  // of kChunkBlocks blocks, then summed in double in chunk order: the same bits at any thread count.
  std::vector<int64_t> at(n_layers + 1, 0);
  for (int64_t l = 0; l < n_layers; ++l) at[l + 1] = at[l] + widths[l + 1] * (widths[l] + 1);
  const int64_t n_sums = 8 * at[n_layers], chunk_points = kChunkBlocks * kLanes;
  const int64_t n_chunks = (n + chunk_points - 1) / chunk_points;
  std::vector<float> sums(n_chunks * n_sums, 0.0f);
#pragma omp parallel num_threads(threads)
  {
    Block block(net);
    std::vector<float> grad(kMaxWidth * kLanes), grad_below(kMaxWidth * kLanes);
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk)
      for (int64_t start = chunk * chunk_points; start < std::min(n, (chunk + 1) * chunk_points); start += kLanes) {
        const int64_t count = std::min<int64_t>(kLanes, n - start);
        block_backward(x, grad_out, grad_x, start, count, net, block, sums.data() + chunk * n_sums, at.data(),
                       grad.data(), grad_below.data());
      }
  }
  std::vector<double> totals(at[n_layers], 0.0);
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk)
    for (int64_t p = 0; p < at[n_layers]; ++p)
      for (int t = 0; t < 8; ++t) totals[p] += sums[chunk * n_sums + 8 * p + t];
  for (int64_t l = 0; l < n_layers; ++l) {
    const int64_t lo = widths[l], hi = widths[l + 1];
    for (int64_t p = 0; p < hi * lo; ++p) grad_weights[l][p] = static_cast<float>(totals[at[l] + p]);
    for (int64_t j = 0; j < hi; ++j) grad_biases[l][j] = static_cast<float>(totals[at[l] + hi * lo + j]);
  }
  return 0;
}

}  // extern "C"
