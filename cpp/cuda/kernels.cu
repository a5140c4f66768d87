// CUDA versions of the exact kNN and the fused multi-scale RBF MMD (kernels_cuda.hpp).
//
// Both stand on one tile routine: a block of 16 x 16 threads computes a 64 x 64 tile
// of squared Euclidean distances between rows of A and rows of B, each thread a 4 x 4
// register micro-tile, the features streamed through shared memory 16 at a time.
// Distances are sum((a - b)^2) directly (no |a|^2 + |b|^2 - 2ab cancellation), in the
// input's precision.
//
// MMD: the tile's distances become kernel values in registers (one exp in double per
// pair, the power-of-two ladder by squaring as on the CPU) and are summed in double:
// per thread, then per block, then one atomicAdd per block. A self-sum visits only
// tiles on or above the diagonal and counts the others twice.
//
// kNN: distance tiles for a chunk of queries against all reference rows go to one
// buffer in device memory (its size is capped, the query chunk shrinks to fit); one
// warp per query then keeps the k best with a threshold + ballot-compacted candidate
// buffer in shared memory, merged by a warp-wide bitonic sort when it fills. Ties go
// to the lower index, as in the reference.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "cellsynth/kernels_cuda.hpp"
#include "cellsynth/mmd_scales.hpp"

namespace cellsynth {
namespace cuda {
namespace {

constexpr int TILE = 64;  // rows of A and of B per block
constexpr int TK = 16;    // features per shared-memory step
constexpr int MAX_SCALES = 16;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

// Owns one device allocation.
template <typename T>
struct Buffer {
  T* p = nullptr;
  explicit Buffer(size_t count) {
    if (count) check(cudaMalloc(&p, count * sizeof(T)), "cudaMalloc");
  }
  ~Buffer() {
    if (p) cudaFree(p);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

template <typename T>
void upload(Buffer<T>& dst, const T* src, size_t count) {
  if (count) check(cudaMemcpy(dst.p, src, count * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

// acc[i][j] = |a_(r0 + ty + 16 i) - b_(c0 + tx + 16 j)|^2 for the block's 64 x 64 tile.
// Rows past the end read as zeros; callers mask them.
template <typename T>
__device__ void tile_sqdist(const T* __restrict__ a, int64_t na, const T* __restrict__ b, int64_t nb, int64_t d, int64_t r0, int64_t c0,
                            T (*as)[TILE + 1], T (*bs)[TILE + 1], T acc[4][4]) {
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
  for (int64_t k0 = 0; k0 < d; k0 += TK) {
    // 256 threads load 64 x 16 of A and of B, 4 elements each, 16 consecutive features per row
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int idx = tid + 256 * s, row = idx / TK, kc = idx % TK;
      const int64_t ra = r0 + row, rb = c0 + row, kk = k0 + kc;
      as[kc][row] = (ra < na && kk < d) ? a[ra * d + kk] : T(0);
      bs[kc][row] = (rb < nb && kk < d) ? b[rb * d + kk] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kc = 0; kc < TK; ++kc) {
      T av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = as[kc][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = bs[kc][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const T diff = av[i] - bv[j];
          acc[i][j] = fma(diff, diff, acc[i][j]);
        }
    }
    __syncthreads();
  }
}

struct Scales {
  double inv[MAX_SCALES];  // 1 / (2 sigma^2), widest first
  int n;
  bool ladder;  // each inv is 4x the previous: one exp, then squaring
};

__device__ __forceinline__ double kernel_value(double dist, const Scales& s) {
  if (s.ladder) {
    double e = exp(-dist * s.inv[0]), kv = e;
    for (int q = 1; q < s.n; ++q) {
      e *= e;
      e *= e;
      kv += e;
    }
    return kv;
  }
  double kv = 0.0;
  for (int q = 0; q < s.n; ++q) kv += exp(-dist * s.inv[q]);
  return kv;
}

// Sum over pairs of the multi-scale kernel. same: A == B (only tiles with bx >= by are
// visited, off-diagonal tiles count twice; the diagonal is skipped unless include_diag).
template <typename T>
__global__ void kernel_sum_tiles(const T* __restrict__ a, int64_t na, const T* __restrict__ b, int64_t nb, int64_t d, Scales scales,
                                 bool same, bool include_diag, double* total) {
  if (same && blockIdx.x < blockIdx.y) return;
  __shared__ T as[TK][TILE + 1];
  __shared__ T bs[TK][TILE + 1];
  __shared__ double red[256];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * TILE, c0 = static_cast<int64_t>(blockIdx.x) * TILE;
  T acc[4][4];
  tile_sqdist(a, na, b, nb, d, r0, c0, as, bs, acc);
  double part = 0.0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + threadIdx.y + 16 * i, c = c0 + threadIdx.x + 16 * j;
      if (r < na && c < nb && !(same && !include_diag && r == c)) part += kernel_value(static_cast<double>(acc[i][j]), scales);
    }
  const int tid = threadIdx.y * 16 + threadIdx.x;
  red[tid] = part;
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    __syncthreads();
  }
  if (tid == 0) atomicAdd(total, (same && blockIdx.x != blockIdx.y) ? 2.0 * red[0] : red[0]);
}

template <typename T>
double kernel_sum(const T* a, int64_t na, const T* b, int64_t nb, int64_t d, const Scales& s, bool same, bool include_diag) {
  Buffer<double> total(1);
  check(cudaMemset(total.p, 0, sizeof(double)), "cudaMemset");
  const dim3 block(16, 16), grid(static_cast<unsigned>((nb + TILE - 1) / TILE), static_cast<unsigned>((na + TILE - 1) / TILE));
  if (grid.y > 65535) throw std::runtime_error("MMD: too many rows for one grid (more than 4 million)");
  kernel_sum_tiles<T><<<grid, block>>>(a, na, b, nb, d, s, same, include_diag, total.p);
  check(cudaGetLastError(), "kernel_sum_tiles launch");
  double out = 0.0;
  check(cudaMemcpy(&out, total.p, sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy MMD total");
  return out;
}

// Distances of queries [q0, q0 + mq) against all n reference rows into dist (mq x ld).
template <typename T>
__global__ void distance_tiles(const T* __restrict__ q, int64_t m, int64_t q0, const T* __restrict__ x, int64_t n, int64_t d, bool self_query,
                               T* __restrict__ dist, int64_t ld) {
  __shared__ T as[TK][TILE + 1];
  __shared__ T bs[TK][TILE + 1];
  const int64_t r0 = q0 + static_cast<int64_t>(blockIdx.y) * TILE, c0 = static_cast<int64_t>(blockIdx.x) * TILE;
  T acc[4][4];
  tile_sqdist(q, m, x, n, d, r0, c0, as, bs, acc);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + threadIdx.y + 16 * i, c = c0 + threadIdx.x + 16 * j;
      if (r < m && c < n) dist[(r - q0) * ld + c] = (self_query && r == c) ? std::numeric_limits<T>::infinity() : acc[i][j];
    }
}

template <typename T>
__device__ __forceinline__ bool before(T va, int64_t ia, T vb, int64_t ib) {
  return va < vb || (va == vb && ia < ib);
}

// Ascending bitonic sort of (val, idx)[0, len) in shared memory by one warp.
template <typename T>
__device__ void warp_bitonic_sort(T* val, int64_t* idx, int len, int lane) {
  for (int size = 2; size <= len; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = lane; i < len / 2; i += 32) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const bool up = (lo & size) == 0;
        if (before(val[hi], idx[hi], val[lo], idx[lo]) == up) {
          const T tv = val[lo];
          val[lo] = val[hi];
          val[hi] = tv;
          const int64_t ti = idx[lo];
          idx[lo] = idx[hi];
          idx[hi] = ti;
        }
      }
      __syncwarp();
    }
  }
}

constexpr int SELECT_WARPS = 4;

// One warp per query row: the k smallest of dist[row][0, n). kp: power of two >= max(k, 32);
// shared memory per warp holds the kp best so far and a kp-slot candidate buffer.
template <typename T>
__global__ void select_topk(const T* __restrict__ dist, int64_t rows, int64_t n, int64_t ld, int k, int kp, int64_t out_row0,
                            double* __restrict__ out_d, int64_t* __restrict__ out_i) {
  extern __shared__ unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * SELECT_WARPS + warp;
  if (row >= rows) return;  // whole warps leave together
  T* val = reinterpret_cast<T*>(smem) + static_cast<size_t>(warp) * 2 * kp;
  int64_t* idx = reinterpret_cast<int64_t*>(reinterpret_cast<T*>(smem) + static_cast<size_t>(SELECT_WARPS) * 2 * kp) + static_cast<size_t>(warp) * 2 * kp;
  const T inf = std::numeric_limits<T>::infinity();
  for (int i = lane; i < 2 * kp; i += 32) {
    val[i] = inf;
    idx[i] = std::numeric_limits<int64_t>::max();
  }
  __syncwarp();
  const T* drow = dist + row * ld;
  int filled = 0;  // candidates waiting in the buffer val[kp, 2 kp)
  T thresh = inf;
  auto merge = [&]() {
    __syncwarp();
    warp_bitonic_sort(val, idx, 2 * kp, lane);
    for (int i = kp + lane; i < 2 * kp; i += 32) {
      val[i] = inf;
      idx[i] = std::numeric_limits<int64_t>::max();
    }
    __syncwarp();
    thresh = val[k - 1];
    filled = 0;
  };
  for (int64_t base = 0; base < n; base += 32) {
    const int64_t j = base + lane;
    const T v = j < n ? drow[j] : inf;
    const bool pass = v < thresh;  // rows are scanned in index order: a tie never displaces
    const unsigned mask = __ballot_sync(0xffffffffu, pass);
    if (pass) {
      const int pos = kp + filled + __popc(mask & ((1u << lane) - 1u));
      val[pos] = v;
      idx[pos] = j;
    }
    filled += __popc(mask);
    if (filled > kp - 32) merge();
  }
  if (filled > 0) merge();
  for (int i = lane; i < k; i += 32) {
    out_d[(out_row0 + row) * k + i] = static_cast<double>(val[i]);
    out_i[(out_row0 + row) * k + i] = idx[i];
  }
}

}  // namespace

int device_count() {
  int c = 0;
  if (cudaGetDeviceCount(&c) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a machine without a driver
    return 0;
  }
  return c;
}

std::string device_name() {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
  return p.name;
}

template <typename T>
void knn(const T* x, int64_t n, const T* q, int64_t m, int64_t d, int k, bool self_query, double* out_d, int64_t* out_i) {
  if (m == 0 || k == 0) return;
  if (k > kMaxK) throw std::invalid_argument("CUDA kNN supports k <= " + std::to_string(kMaxK));
  int kp = 32;
  while (kp < k) kp <<= 1;
  Buffer<T> dx(static_cast<size_t>(n) * d);
  upload(dx, x, static_cast<size_t>(n) * d);
  Buffer<T> dq(self_query ? 0 : static_cast<size_t>(m) * d);
  if (!self_query) upload(dq, q, static_cast<size_t>(m) * d);
  const T* qp = self_query ? dx.p : dq.p;
  // query chunk: its distance rows within ~1 GiB, a multiple of the tile height
  const int64_t budget = int64_t(1) << 30;
  int64_t chunk = std::max<int64_t>(TILE, (budget / (n * static_cast<int64_t>(sizeof(T)))) / TILE * TILE);
  chunk = std::min<int64_t>({chunk, ((m + TILE - 1) / TILE) * TILE, int64_t(65535) * TILE});
  Buffer<T> dist(static_cast<size_t>(chunk) * n);
  Buffer<double> od(static_cast<size_t>(m) * k);
  Buffer<int64_t> oi(static_cast<size_t>(m) * k);
  // at most 4 warps x 512 slots x 16 bytes = 32 KB: within the default 48 KB on every GPU
  const size_t smem = static_cast<size_t>(SELECT_WARPS) * 2 * kp * (sizeof(T) + sizeof(int64_t));
  for (int64_t q0 = 0; q0 < m; q0 += chunk) {
    const int64_t mq = std::min<int64_t>(chunk, m - q0);
    const dim3 grid(static_cast<unsigned>((n + TILE - 1) / TILE), static_cast<unsigned>((mq + TILE - 1) / TILE));
    distance_tiles<T><<<grid, dim3(16, 16)>>>(qp, m, q0, dx.p, n, d, self_query, dist.p, n);
    check(cudaGetLastError(), "distance_tiles launch");
    select_topk<T><<<static_cast<unsigned>((mq + SELECT_WARPS - 1) / SELECT_WARPS), 32 * SELECT_WARPS, smem>>>(dist.p, mq, n, n, k, kp, q0, od.p, oi.p);
    check(cudaGetLastError(), "select_topk launch");
  }
  check(cudaMemcpy(out_d, od.p, static_cast<size_t>(m) * k * sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy kNN distances");
  check(cudaMemcpy(out_i, oi.p, static_cast<size_t>(m) * k * sizeof(int64_t), cudaMemcpyDeviceToHost), "cudaMemcpy kNN indices");
}

template <typename T>
double mmd(const T* x, int64_t n, const T* y, int64_t m, int64_t d, const std::vector<double>& sigmas, bool biased) {
  if (sigmas.empty() || sigmas.size() > MAX_SCALES) throw std::invalid_argument("CUDA MMD takes 1 to 16 bandwidths");
  const RbfScales rs = rbf_scales(sigmas);
  Scales s{};  // the same scales, as a kernel argument
  s.n = static_cast<int>(rs.inv.size());
  std::copy(rs.inv.begin(), rs.inv.end(), s.inv);
  s.ladder = rs.ladder;
  Buffer<T> dx(static_cast<size_t>(n) * d), dy(static_cast<size_t>(m) * d);
  upload(dx, x, static_cast<size_t>(n) * d);
  upload(dy, y, static_cast<size_t>(m) * d);
  const double kxx = kernel_sum(dx.p, n, dx.p, n, d, s, true, biased);
  const double kyy = kernel_sum(dy.p, m, dy.p, m, d, s, true, biased);
  const double kxy = kernel_sum(dx.p, n, dy.p, m, d, s, false, true);
  return mmd_from_sums(kxx, kyy, kxy, n, m, biased);
}

template void knn<float>(const float*, int64_t, const float*, int64_t, int64_t, int, bool, double*, int64_t*);
template void knn<double>(const double*, int64_t, const double*, int64_t, int64_t, int, bool, double*, int64_t*);
template double mmd<float>(const float*, int64_t, const float*, int64_t, int64_t, const std::vector<double>&, bool);
template double mmd<double>(const double*, int64_t, const double*, int64_t, int64_t, const std::vector<double>&, bool);

}  // namespace cuda
}  // namespace cellsynth
