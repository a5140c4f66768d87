// Thin pybind11 layer: check shapes and dtypes, convert, release the GIL, call kernels.hpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef CELLSYNTH_CUDA_MODULE
// the same binding layer over the CUDA kernels, as cellsynth._cuda
#include "cellsynth/kernels_cuda.hpp"
namespace kern = cellsynth::cuda;
#define CELLSYNTH_MODULE_NAME _cuda
#else
#include <cstdlib>

#include "cellsynth/dispatch.hpp"
#define CELLSYNTH_MODULE_NAME _core

namespace {

struct CpuPaths {
  bool avx2 = false, avx512 = false;
};

CpuPaths cpu_paths() {
  CpuPaths c;
#ifdef CELLSYNTH_X86_DISPATCH
  __builtin_cpu_init();
  c.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  c.avx512 = c.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
  return c;
}

// The kernels of path `want` ("" = the fastest this CPU has); refuses a path the CPU
// (or this build) lacks rather than crash on an illegal instruction.
const cellsynth::Kernels& choose_kernels(const std::string& want) {
  const CpuPaths cpu = cpu_paths();
  auto refuse = [&](const char* what) {
    throw std::runtime_error("CELLSYNTH_SIMD=" + want + " asks for " + what +
                             ", which this CPU (or this build) does not have; unset CELLSYNTH_SIMD or set it to portable");
  };
  if (want == "portable") return cellsynth::portable::kernels();
  if (want == "avx2" && !cpu.avx2) refuse("AVX2 + FMA");
  if (want == "avx512" && !cpu.avx512) refuse("AVX-512 (F, DQ, BW, VL)");
  if (!want.empty() && want != "avx2" && want != "avx512")
    throw std::runtime_error("CELLSYNTH_SIMD=" + want + " is not one of portable, avx2, avx512; unset it to pick the fastest path this CPU has");
#ifdef CELLSYNTH_X86_DISPATCH
  if (cpu.avx512 && want != "avx2") return cellsynth::avx512::kernels();
  if (cpu.avx2) return cellsynth::avx2::kernels();
#endif
  return cellsynth::portable::kernels();
}

const cellsynth::Kernels* table = nullptr;

}  // namespace

// the binding layer's view: the same calls as the CUDA module's, through the table
namespace kern {
inline void knn(const float* x, int64_t n, const float* q, int64_t m, int64_t d, int k, bool self, double* od, int64_t* oi) { table->knn_f32(x, n, q, m, d, k, self, od, oi); }
inline void knn(const double* x, int64_t n, const double* q, int64_t m, int64_t d, int k, bool self, double* od, int64_t* oi) { table->knn_f64(x, n, q, m, d, k, self, od, oi); }
inline double mmd(const float* x, int64_t n, const float* y, int64_t m, int64_t d, const std::vector<double>& s, bool biased) { return table->mmd_f32(x, n, y, m, d, s, biased); }
inline double mmd(const double* x, int64_t n, const double* y, int64_t m, int64_t d, const std::vector<double>& s, bool biased) { return table->mmd_f64(x, n, y, m, d, s, biased); }
}  // namespace kern
#endif

namespace py = pybind11;
template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

namespace {

void check_2d(const py::buffer_info& b, const char* name) {
  if (b.ndim != 2) throw std::invalid_argument(std::string(name) + " must be a 2-D array (cells x features)");
}

bool is_f32(const py::array& a) { return a.dtype().is(py::dtype::of<float>()); }

template <typename T>
py::tuple knn_t(const carray<T>& x, int k, const py::object& query) {
  auto xb = x.request();
  check_2d(xb, "x");
  const bool self = query.is_none();
  carray<T> q = self ? x : carray<T>::ensure(query);
  if (!q) throw std::invalid_argument("query must be a numeric array");
  auto qb = q.request();
  check_2d(qb, "query");
  if (qb.shape[1] != xb.shape[1]) throw std::invalid_argument("query and x have different numbers of features");
  const int64_t n = xb.shape[0], m = qb.shape[0], d = xb.shape[1];
  const int64_t cand = self ? n - 1 : n;
  const int kk = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(k, cand)));
  py::array_t<double> dist({m, static_cast<int64_t>(kk)});
  py::array_t<int64_t> idx({m, static_cast<int64_t>(kk)});
  const T* xp = static_cast<const T*>(xb.ptr);
  const T* qp = static_cast<const T*>(qb.ptr);
  double* dp = dist.mutable_data();
  int64_t* ip = idx.mutable_data();
  {
    py::gil_scoped_release release;
    kern::knn(xp, n, qp, m, d, kk, self, dp, ip);
  }
  return py::make_tuple(dist, idx);
}

template <typename T>
double mmd_t(const carray<T>& x, const carray<T>& y, const std::vector<double>& sigmas, bool biased) {
  auto xb = x.request(), yb = y.request();
  check_2d(xb, "x");
  check_2d(yb, "y");
  if (xb.shape[1] != yb.shape[1]) throw std::invalid_argument("x and y have different numbers of features");
  if (xb.shape[0] < 2 || yb.shape[0] < 2) throw std::invalid_argument("MMD needs at least two points in each sample");
  const T* xp = static_cast<const T*>(xb.ptr);
  const T* yp = static_cast<const T*>(yb.ptr);
  py::gil_scoped_release release;
  return kern::mmd(xp, xb.shape[0], yp, yb.shape[0], xb.shape[1], sigmas, biased);
}

}  // namespace

PYBIND11_MODULE(CELLSYNTH_MODULE_NAME, m) {
#ifdef CELLSYNTH_CUDA_MODULE
  m.doc() = "cellsynth CUDA metric kernels (exact kNN, fused multi-scale RBF MMD) on GPU 0";
  m.def("device_count", &kern::device_count, "Number of usable CUDA devices (0 without a driver or GPU).");
  m.def("device_name", &kern::device_name, "Name of CUDA device 0.");
#else
  m.doc() = "cellsynth native metric kernels (exact kNN, fused multi-scale RBF MMD, LISI)";
  const char* env = std::getenv("CELLSYNTH_SIMD");
  table = &choose_kernels(env ? env : "");
  m.attr("simd") = table->name;  // the instruction set the kernels run: "avx512", "avx2" or "portable"
  m.def(
      "supported_simd",
      []() {
        const CpuPaths cpu = cpu_paths();
        std::vector<std::string> out{"portable"};
        if (cpu.avx2) out.push_back("avx2");
        if (cpu.avx512) out.push_back("avx512");
        return out;
      },
      "The kernel paths this CPU and build can run, slowest first.");
  m.def(
      "_set_simd",
      [m](const std::string& name) mutable {
        table = &choose_kernels(name);
        m.attr("simd") = table->name;
      },
      py::arg("name"), "Switch the kernel path (for tests; users set CELLSYNTH_SIMD before import).");
#endif
  m.def(
      "knn",
      [](const py::array& x, int k, const py::object& query) -> py::tuple {
        if (is_f32(x) && (query.is_none() || is_f32(py::array::ensure(query)))) return knn_t<float>(carray<float>::ensure(x), k, query);
        return knn_t<double>(carray<double>::ensure(x), k, query);
      },
      py::arg("x"), py::arg("k"), py::arg("query") = py::none(),
      "Exact kNN: (squared Euclidean distances, indices), self excluded for a self-query.");
  m.def(
      "mmd",
      [](const py::array& x, const py::array& y, const std::vector<double>& sigmas, bool biased) -> double {
        if (is_f32(x) && is_f32(y)) return mmd_t<float>(carray<float>::ensure(x), carray<float>::ensure(y), sigmas, biased);
        return mmd_t<double>(carray<double>::ensure(x), carray<double>::ensure(y), sigmas, biased);
      },
      py::arg("x"), py::arg("y"), py::arg("sigmas"), py::arg("biased") = false,
      "Squared MMD with kernel sum_s exp(-|a-b|^2 / (2 s^2)); double accumulation, no N x N matrix.");
#ifndef CELLSYNTH_CUDA_MODULE
  m.def(
      "lisi",
      [](const carray<double>& dist, const carray<int64_t>& idx, const carray<int64_t>& labels, double perplexity) {
        auto db = dist.request(), ib = idx.request(), lb = labels.request();
        check_2d(db, "distances");
        check_2d(ib, "indices");
        if (db.shape[0] != ib.shape[0] || db.shape[1] != ib.shape[1]) throw std::invalid_argument("distances and indices differ in shape");
        const int64_t n = db.shape[0];
        const int k = static_cast<int>(db.shape[1]);
        const int64_t* lp = labels.data();
        int64_t nl = 0;
        for (int64_t i = 0; i < lb.shape[0]; ++i) {
          if (lp[i] < 0) throw std::invalid_argument("labels must be non-negative integer codes");
          nl = std::max(nl, lp[i] + 1);
        }
        const int64_t* ip = idx.data();
        for (int64_t i = 0; i < n * k; ++i)
          if (ip[i] < 0 || ip[i] >= lb.shape[0]) throw std::invalid_argument("an index points outside labels");
        py::array_t<double> out(n);
        double* op = out.mutable_data();
        const double* dp = dist.data();
        {
          py::gil_scoped_release release;
          if (k == 0) {
            for (int64_t i = 0; i < n; ++i) op[i] = std::numeric_limits<double>::quiet_NaN();
          } else {
            table->lisi(dp, ip, n, k, lp, nl, perplexity, op);
          }
        }
        return out;
      },
      py::arg("distances"), py::arg("indices"), py::arg("labels"), py::arg("perplexity") = 30.0,
      "Per-cell LISI from a kNN result (plain distances).");
#endif
}
