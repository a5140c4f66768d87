// Thin pybind11 layer: check shapes and dtypes, convert, release the GIL, call kernels.hpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#ifdef CELLSYNTH_CUDA_MODULE
// the same binding layer over the CUDA kernels, as cellsynth._cuda
#include "cellsynth/kernels_cuda.hpp"
namespace kern = cellsynth::cuda;
#define CELLSYNTH_MODULE_NAME _cuda
#else
#include "cellsynth/kernels.hpp"
namespace kern = cellsynth;
#define CELLSYNTH_MODULE_NAME _core
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
#ifdef CELLSYNTH_AVX512
  m.attr("simd") = "avx512";
#else
  m.attr("simd") = "portable";
#endif
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
            cellsynth::lisi(dp, ip, n, k, lp, nl, perplexity, op);
          }
        }
        return out;
      },
      py::arg("distances"), py::arg("indices"), py::arg("labels"), py::arg("perplexity") = 30.0,
      "Per-cell LISI from a kNN result (plain distances).");
#endif
}
