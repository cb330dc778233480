// Prototype (issue 4): a 3x3 SAME stride-1 NHWC convolution as an XLA FFI custom call:
// im2col built a few images at a time in a ~4 MB buffer, then one OpenBLAS SGEMM per block.
// Forward only; built and timed by benchmarks/ffi_conv/bench.py.
#include <algorithm>
#include <cstring>
#include <vector>
#include "xla/ffi/api/ffi.h"
#include "cblas.h"
namespace ffi = xla::ffi;

static ffi::Error ConvFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                              ffi::ResultBuffer<ffi::F32> y) {
  auto d = x.dimensions();
  const long n = d[0], h = d[1], wd = d[2], c = d[3];
  const long o = w.dimensions()[3];
  const long k = 9 * c, pix = h * wd;
  long block = std::max(1L, (4L << 20) / (pix * k * 4));
  std::vector<float> cols(block * pix * k);
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  for (long b0 = 0; b0 < n; b0 += block) {
    long bn = std::min(block, n - b0);
    for (long b = 0; b < bn; ++b) {
      const float* img = xs + (b0 + b) * pix * c;
      float* out = cols.data() + b * pix * k;
      for (long i = 0; i < h; ++i)
        for (long j = 0; j < wd; ++j) {
          float* row = out + (i * wd + j) * k;
          for (long di = 0; di < 3; ++di)
            for (long dj = 0; dj < 3; ++dj) {
              long ii = i + di - 1, jj = j + dj - 1;
              float* dst = row + (di * 3 + dj) * c;
              if (ii < 0 || ii >= h || jj < 0 || jj >= wd) std::memset(dst, 0, c * 4);
              else std::memcpy(dst, img + (ii * wd + jj) * c, c * 4);
            }
        }
    }
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bn * pix, o, k, 1.0f,
                      cols.data(), k, w.typed_data(), o, 0.0f, ys + b0 * pix * o, o);
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(MjConvFwd, ConvFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
