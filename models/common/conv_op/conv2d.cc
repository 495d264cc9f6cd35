// A 2-D convolution (groups, stride, asymmetric zero padding) with its gradient and
// double gradient, as a Paddle custom operator. Paddle's eager CPU conv2d runs
// im2col and a small GEMM per image and group; here each group's patches of many
// images go into one GEMM (MKL's, the one Paddle links), which is several times
// faster at the few-shot shapes (benchmarks/README.md). The double gradient
// is right for inputs that take no gradient too (Paddle's conv2d_grad_grad is not).
//
// Layout (NCHW): x [N, G*Ci, H, W], w [G*Co, Ci, KH, KW], out [N, G*Co, Ho, Wo].
// paddings = {top, bottom, left, right}.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "paddle/extension.h"

extern "C" {  // CBLAS, from libmklml_intel.so (shipped in Paddle's wheel)
void cblas_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
void cblas_dgemm(int layout, int trans_a, int trans_b, int m, int n, int k, double alpha,
                 const double* a, int lda, const double* b, int ldb, double beta, double* c, int ldc);
}

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kColumnBudget = 1 << 22;  // elements of one patch matrix: bounds the extra memory

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, a, lda, b, ldb,
              beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0, a, lda, b, ldb,
              beta, c, ldc);
}

struct Geometry {
  int64_t n, groups, ci, h, w, co, kh, kw, stride, top, left, ho, wo;
  int64_t patch() const { return ci * kh * kw; }      // K: rows of the patch matrix
  int64_t positions() const { return ho * wo; }       // P: output positions per image
  int64_t chunk() const {                             // images per GEMM
    return std::max<int64_t>(1, std::min<int64_t>(n, kColumnBudget / std::max<int64_t>(1, patch() * positions())));
  }
};

Geometry MakeGeometry(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int stride,
                      const std::vector<int>& paddings, int groups) {
  PD_CHECK(x.size() == 4 && w.size() == 4, "fewshot_conv2d: x and w must be 4-D (NCHW, OIHW)");
  PD_CHECK(paddings.size() == 4, "fewshot_conv2d: paddings = {top, bottom, left, right}");
  PD_CHECK(groups >= 1 && stride >= 1, "fewshot_conv2d: groups and stride must be >= 1");
  PD_CHECK(x[1] == w[1] * groups && w[0] % groups == 0,
           "fewshot_conv2d: channels of x and w disagree with groups");
  Geometry g{x[0], groups, w[1], x[2], x[3], w[0] / groups, w[2], w[3], stride, paddings[0], paddings[2], 0, 0};
  g.ho = (g.h + paddings[0] + paddings[1] - g.kh) / stride + 1;
  g.wo = (g.w + paddings[2] + paddings[3] - g.kw) / stride + 1;
  PD_CHECK(g.ho > 0 && g.wo > 0, "fewshot_conv2d: the kernel is larger than the padded input");
  return g;
}

// The output columns [lo, hi) whose input column ow*stride - left + j lies inside the image.
struct ValidColumns {
  int64_t lo, hi;
};

ValidColumns Columns(const Geometry& g, int64_t j) {
  const int64_t first = g.left - j, last = g.w - 1 + g.left - j;  // ow*stride must lie in [first, last]
  const int64_t lo = first <= 0 ? 0 : (first + g.stride - 1) / g.stride;
  const int64_t hi = last < 0 ? 0 : std::min(g.wo, last / g.stride + 1);
  return {std::min(lo, g.wo), std::max(hi, std::min(lo, g.wo))};
}

// col [K, (n1-n0)*P] <- the patches of images n0..n1 of group `group`.
template <typename T>
void Im2Col(const T* x, const Geometry& g, int64_t group, int64_t n0, int64_t n1, T* col) {
  const int64_t P = g.positions(), L = (n1 - n0) * P;
  for (int64_t c = 0; c < g.ci; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* row = col + ((c * g.kh + i) * g.kw + j) * L;
        const ValidColumns v = Columns(g, j);
        for (int64_t n = n0; n < n1; ++n) {
          const T* image = x + ((n * g.groups + group) * g.ci + c) * g.h * g.w;
          T* dst = row + (n - n0) * P;
          for (int64_t oh = 0; oh < g.ho; ++oh, dst += g.wo) {
            const int64_t ih = oh * g.stride - g.top + i;
            if (ih < 0 || ih >= g.h) {
              std::fill(dst, dst + g.wo, T(0));
              continue;
            }
            const T* line = image + ih * g.w - g.left + j;
            std::fill(dst, dst + v.lo, T(0));
            for (int64_t ow = v.lo; ow < v.hi; ++ow) dst[ow] = line[ow * g.stride];
            std::fill(dst + v.hi, dst + g.wo, T(0));
          }
        }
      }
}

// dx (images n0..n1, group `group`) += the patch gradients col [K, (n1-n0)*P].
template <typename T>
void Col2ImAdd(const T* col, const Geometry& g, int64_t group, int64_t n0, int64_t n1, T* dx) {
  const int64_t P = g.positions(), L = (n1 - n0) * P;
  for (int64_t c = 0; c < g.ci; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = col + ((c * g.kh + i) * g.kw + j) * L;
        const ValidColumns v = Columns(g, j);
        for (int64_t n = n0; n < n1; ++n) {
          T* image = dx + ((n * g.groups + group) * g.ci + c) * g.h * g.w;
          const T* src = row + (n - n0) * P;
          for (int64_t oh = 0; oh < g.ho; ++oh, src += g.wo) {
            const int64_t ih = oh * g.stride - g.top + i;
            if (ih < 0 || ih >= g.h) continue;
            T* line = image + ih * g.w - g.left + j;
            for (int64_t ow = v.lo; ow < v.hi; ++ow) line[ow * g.stride] += src[ow];
          }
        }
      }
}

// Between the output [N, G*Co, P] and one group's matrix [Co, (n1-n0)*P].
template <typename T>
void GatherOutput(const T* out, const Geometry& g, int64_t group, int64_t n0, int64_t n1, T* y) {
  const int64_t P = g.positions(), L = (n1 - n0) * P;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t o = 0; o < g.co; ++o)
      std::memcpy(y + o * L + (n - n0) * P, out + ((n * g.groups + group) * g.co + o) * P, P * sizeof(T));
}

template <typename T>
void ScatterOutputAdd(const T* y, const Geometry& g, int64_t group, int64_t n0, int64_t n1, T* out) {
  const int64_t P = g.positions(), L = (n1 - n0) * P;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t o = 0; o < g.co; ++o) {
      T* dst = out + ((n * g.groups + group) * g.co + o) * P;
      const T* src = y + o * L + (n - n0) * P;
      for (int64_t p = 0; p < P; ++p) dst[p] += src[p];
    }
}

// Calls body(group, n0, n1, L, col, y) for every group and chunk of images n0..n1 (L = (n1-n0)*P
// columns), with scratch matrices col [K, L] (patches) and y [Co, L] (one group's output).
template <typename T, typename Body>
void ForEachChunk(const Geometry& g, Body body) {
  const int64_t K = g.patch(), P = g.positions(), step = g.chunk();
  std::unique_ptr<T[]> col(new T[K * step * P]), y(new T[g.co * step * P]);  // uninitialised: fully written
  for (int64_t group = 0; group < g.groups; ++group)
    for (int64_t n0 = 0; n0 < g.n; n0 += step) {
      const int64_t n1 = std::min(g.n, n0 + step);
      body(group, n0, n1, (n1 - n0) * P, col.get(), y.get());
    }
}

// out += conv(x, w)
template <typename T>
void ConvAdd(const T* x, const T* w, const Geometry& g, T* out) {
  const int64_t K = g.patch();
  ForEachChunk<T>(g, [&](int64_t group, int64_t n0, int64_t n1, int64_t L, T* col, T* y) {
    Im2Col(x, g, group, n0, n1, col);
    gemm(false, false, g.co, L, K, w + group * g.co * K, K, col, L, T(0), y, L);
    ScatterOutputAdd(y, g, group, n0, n1, out);
  });
}

// dx += the gradient of <dout, conv(x, w)> with respect to x
template <typename T>
void ConvGradInputAdd(const T* dout, const T* w, const Geometry& g, T* dx) {
  const int64_t K = g.patch();
  ForEachChunk<T>(g, [&](int64_t group, int64_t n0, int64_t n1, int64_t L, T* col, T* y) {
    GatherOutput(dout, g, group, n0, n1, y);
    gemm(true, false, K, L, g.co, w + group * g.co * K, K, y, L, T(0), col, L);
    Col2ImAdd(col, g, group, n0, n1, dx);
  });
}

// dw += the gradient of <dout, conv(x, w)> with respect to w
template <typename T>
void ConvGradWeightAdd(const T* x, const T* dout, const Geometry& g, T* dw) {
  const int64_t K = g.patch();
  ForEachChunk<T>(g, [&](int64_t group, int64_t n0, int64_t n1, int64_t L, T* col, T* y) {
    Im2Col(x, g, group, n0, n1, col);
    GatherOutput(dout, g, group, n0, n1, y);
    gemm(false, true, g.co, K, L, y, L, col, L, T(1), dw + group * g.co * K, K);
  });
}

paddle::Tensor Zeros(const paddle::Tensor& like) {
  return paddle::full(like.shape(), 0, like.dtype(), like.place());
}

void CheckCpu(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), "fewshot_conv2d runs on CPU only; ", name, " is not a CPU tensor");
}

}  // namespace

std::vector<paddle::Tensor> ConvForward(const paddle::Tensor& x, const paddle::Tensor& w, int stride,
                                        const std::vector<int>& paddings, int groups) {
  CheckCpu(x, "x");
  CheckCpu(w, "w");
  const Geometry g = MakeGeometry(x.shape(), w.shape(), stride, paddings, groups);
  auto out = paddle::full({g.n, g.groups * g.co, g.ho, g.wo}, 0, x.dtype(), x.place());
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "fewshot_conv2d", ([&] {
    ConvAdd<data_t>(x.data<data_t>(), w.data<data_t>(), g, out.data<data_t>());
  }));
  return {out};
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                         const paddle::Tensor& dout, int stride,
                                         const std::vector<int>& paddings, int groups) {
  const Geometry g = MakeGeometry(x.shape(), w.shape(), stride, paddings, groups);
  auto dx = Zeros(x), dw = Zeros(w);
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "fewshot_conv2d_grad", ([&] {
    ConvGradInputAdd<data_t>(dout.data<data_t>(), w.data<data_t>(), g, dx.data<data_t>());
    ConvGradWeightAdd<data_t>(x.data<data_t>(), dout.data<data_t>(), g, dw.data<data_t>());
  }));
  return {dx, dw};
}

// The grad op maps (x, w, dout) to (dx, dw) = (A(w)^T dout, B(x)^T dout), bilinear;
// given the cotangents ddx, ddw of dx, dw: S = <conv(ddx, w) + conv(x, ddw), dout>.
std::vector<paddle::Tensor> ConvDoubleBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                               const paddle::Tensor& dout,
                                               const paddle::optional<paddle::Tensor>& ddx,
                                               const paddle::optional<paddle::Tensor>& ddw, int stride,
                                               const std::vector<int>& paddings, int groups) {
  const Geometry g = MakeGeometry(x.shape(), w.shape(), stride, paddings, groups);
  auto dx = Zeros(x), dw = Zeros(w), ddout = Zeros(dout);
  const bool has_ddx = ddx && ddx->initialized(), has_ddw = ddw && ddw->initialized();
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "fewshot_conv2d_grad_grad", ([&] {
    if (has_ddx) {
      ConvAdd<data_t>(ddx->data<data_t>(), w.data<data_t>(), g, ddout.data<data_t>());
      ConvGradWeightAdd<data_t>(ddx->data<data_t>(), dout.data<data_t>(), g, dw.data<data_t>());
    }
    if (has_ddw) {
      ConvAdd<data_t>(x.data<data_t>(), ddw->data<data_t>(), g, ddout.data<data_t>());
      ConvGradInputAdd<data_t>(dout.data<data_t>(), ddw->data<data_t>(), g, dx.data<data_t>());
    }
  }));
  return {dx, dw, ddout};
}

std::vector<std::vector<int64_t>> ConvInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                 int stride, const std::vector<int>& paddings, int groups) {
  const Geometry g = MakeGeometry(x, w, stride, paddings, groups);
  return {{g.n, g.groups * g.co, g.ho, g.wo}};
}

std::vector<paddle::DataType> ConvInferDtype(const paddle::DataType& x, const paddle::DataType& w) { return {x}; }

PD_BUILD_OP(fewshot_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "paddings: std::vector<int>", "groups: int"})
    .SetKernelFn(PD_KERNEL(ConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConvInferDtype));

PD_BUILD_GRAD_OP(fewshot_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int", "paddings: std::vector<int>", "groups: int"})
    .SetKernelFn(PD_KERNEL(ConvBackward));

PD_BUILD_DOUBLE_GRAD_OP(fewshot_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out"), paddle::Optional(paddle::Grad(paddle::Grad("X"))),
             paddle::Optional(paddle::Grad(paddle::Grad("W")))})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad(paddle::Grad("Out"))})
    .Attrs({"stride: int", "paddings: std::vector<int>", "groups: int"})
    .SetKernelFn(PD_KERNEL(ConvDoubleBackward));
