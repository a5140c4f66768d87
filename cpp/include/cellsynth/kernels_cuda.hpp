// cellsynth CUDA kernels: exact kNN and fused multi-scale RBF MMD on one GPU.
//
// Plain C++ declarations, so the pybind11 layer (cpp/bindings.cpp, built by the host
// compiler) never goes through nvcc; the algorithms are in cpp/cuda/kernels.cu.
// Same contracts as the CPU kernels in kernels.hpp: inputs are host arrays
// (row-major, cells x features), outputs are host arrays; errors throw
// std::runtime_error naming the CUDA call that failed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cellsynth {
namespace cuda {

// Number of usable CUDA devices (0 when there is no driver or no GPU).
int device_count();
std::string device_name();

// Exact k nearest neighbours of each query row among the rows of x; squared
// Euclidean distances (double) and indices, nearest first; self excluded for a
// self-query. k must not exceed the number of candidates nor kMaxK.
constexpr int kMaxK = 256;
template <typename T>
void knn(const T* x, int64_t n, const T* q, int64_t m, int64_t d, int k, bool self_query, double* out_d, int64_t* out_i);

// Squared MMD with kernel sum_s exp(-|a-b|^2 / (2 s^2)), accumulated in double
// from 64 x 64 distance tiles held in registers (no N x N matrix anywhere).
template <typename T>
double mmd(const T* x, int64_t n, const T* y, int64_t m, int64_t d, const std::vector<double>& sigmas, bool biased);

}  // namespace cuda
}  // namespace cellsynth
