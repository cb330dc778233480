// metajax's CPU convolution: XLA FFI handlers for a grouped, unit-stride NHWC convolution and
// its kernel gradient, each as blocked im2col + one OpenBLAS GEMM per block of images.
//
// Why: XLA:CPU's own convolution reaches 40-52 GFLOP/s on Conv4's layers and a tenth of that
// under vmap with per-task kernels or inside a loop body (benchmarks/RESULTS.md). Building the
// patches a few images at a time in a cache-sized buffer, instead of XLA's 9x-expanded patch
// tensor in DRAM, lets the GEMM run near the BLAS's peak.
//
// Layouts (G groups = tasks with their own kernel, N images each):
//   x  [G, N, H, W, C]      input
//   w  [G, KH, KW, C, O]    kernel (HWIO per group)
//   y  [G, N, OH, OW, O]    output, y[g,n,i,j,:] = sum_{a,b,c} x[g,n,i+a-pt,j+b-pl,c] w[g,a,b,c,:]
//   dw [G, KH, KW, C, O]    kernel gradient of <y, dy>: the adjoint of y in w.
// The input gradient is the forward convolution of dy with the flipped, transposed kernel and
// the complementary padding; metajax/kernels/conv.py builds it so, and the JAX-side rules.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlockBytes = 2 << 20;  // patches of a block of images stay in L2/L3

// The GEMMs run single-threaded: the parallelism is over blocks of images, on XLA's own
// thread pool (below), so that a kernel never competes with XLA's concurrently running ops
// for the cores, and the patch building is parallel too.
const int kSingleThreadedBlas = (scipy_openblas_set_num_threads(1), 0);

// Runs body(item, worker) for item in [0, items) on up to `workers` threads: the caller and
// helpers scheduled on XLA's pool, each claiming the next unclaimed item. A helper that starts
// after every item is claimed returns at once, so the caller never waits for a busy pool,
// only for items already running.
struct ParallelState {
  std::atomic<int64_t> next{0};
  int64_t done = 0;
  std::mutex mu;
  std::condition_variable cv;
};

// Claims and runs items until none is left, then reports how many it ran. `body` lives on
// the caller's stack: it is touched only after claiming an item, and the caller returns only
// once every claimed item is done.
template <typename Body>
void Drain(const std::shared_ptr<ParallelState>& state, int64_t items, const Body* body,
           int64_t worker) {
  int64_t finished = 0;
  for (int64_t i; (i = state->next.fetch_add(1)) < items; ++finished) (*body)(i, worker);
  if (finished > 0) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->done += finished;
    if (state->done == items) state->cv.notify_all();
  }
}

template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t items, int64_t workers, const Body& body) {
  auto state = std::make_shared<ParallelState>();
  for (int64_t w = 1; w < workers; ++w) {
    pool.Schedule([state, items, w, body_ptr = &body] { Drain(state, items, body_ptr, w); });
  }
  Drain(state, items, &body, 0);
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done == items; });
}

int64_t Workers(ffi::ThreadPool& pool, int64_t items) {
  return std::max<int64_t>(1, std::min<int64_t>(items, pool.num_threads()));
}

struct Geometry {
  int64_t groups, images, h, w, c, kh, kw, o, oh, ow, pad_top, pad_left;
  int64_t pixels() const { return oh * ow; }
  int64_t depth() const { return kh * kw * c; }  // the GEMM's reduction length
  // A 1x1 unpadded kernel's patches are the input itself: no copy.
  bool identity_patches() const {
    return kh == 1 && kw == 1 && pad_top == 0 && pad_left == 0 && oh == h && ow == w;
  }
  int64_t block(int64_t elem) const {
    return std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, pixels() * depth() * elem));
  }
};

// cols[p, (a*KW + b)*C + c] = x[i+a-pt, j+b-pl, c] for output pixel p = i*OW + j, 0 outside.
template <typename T>
void Im2col(const T* img, const Geometry& g, T* cols) {
  const int64_t depth = g.depth();
  for (int64_t i = 0; i < g.oh; ++i) {
    for (int64_t j = 0; j < g.ow; ++j) {
      T* row = cols + (i * g.ow + j) * depth;
      for (int64_t a = 0; a < g.kh; ++a) {
        const int64_t ii = i + a - g.pad_top;
        for (int64_t b = 0; b < g.kw; ++b) {
          const int64_t jj = j + b - g.pad_left;
          T* dst = row + (a * g.kw + b) * g.c;
          if (ii < 0 || ii >= g.h || jj < 0 || jj >= g.w) {
            std::fill(dst, dst + g.c, T(0));
          } else {
            std::copy(img + (ii * g.w + jj) * g.c, img + (ii * g.w + jj + 1) * g.c, dst);
          }
        }
      }
    }
  }
}

// With a short reduction (a first layer's 3x3x1 or 3x3x3 patches) the work is bound by
// streaming the output, and the patch copies and BLAS's packing only add to it. These loops
// read the input in place; the inner loop over the output channels vectorizes.
constexpr int64_t kDirectDepth = 32;

// out[i, j, :] = sum_{a, b, c} img[i + a - pt, j + b - pl, c] w[a, b, c, :], one image.
template <typename T>
void DirectForward(const T* img, const T* w, T* out, const Geometry& g) {
  const int64_t o = g.o;
  for (int64_t i = 0; i < g.oh; ++i) {
    for (int64_t j = 0; j < g.ow; ++j) {
      T* __restrict__ dst = out + (i * g.ow + j) * o;
      std::fill(dst, dst + o, T(0));
      for (int64_t a = 0; a < g.kh; ++a) {
        const int64_t ii = i + a - g.pad_top;
        if (ii < 0 || ii >= g.h) continue;
        for (int64_t b = 0; b < g.kw; ++b) {
          const int64_t jj = j + b - g.pad_left;
          if (jj < 0 || jj >= g.w) continue;
          const T* src = img + (ii * g.w + jj) * g.c;
          const T* __restrict__ wk = w + (a * g.kw + b) * g.c * o;
          for (int64_t c = 0; c < g.c; ++c) {
            const T v = src[c];
            for (int64_t k = 0; k < o; ++k) dst[k] += v * wk[c * o + k];
          }
        }
      }
    }
  }
}

// acc[a, b, c, :] += sum_{i, j} img[i + a - pt, j + b - pl, c] dy[i, j, :], one image.
template <typename T>
void DirectKernelGrad(const T* img, const T* dy, T* acc, const Geometry& g) {
  const int64_t o = g.o;
  for (int64_t i = 0; i < g.oh; ++i) {
    for (int64_t j = 0; j < g.ow; ++j) {
      const T* __restrict__ grad = dy + (i * g.ow + j) * o;
      for (int64_t a = 0; a < g.kh; ++a) {
        const int64_t ii = i + a - g.pad_top;
        if (ii < 0 || ii >= g.h) continue;
        for (int64_t b = 0; b < g.kw; ++b) {
          const int64_t jj = j + b - g.pad_left;
          if (jj < 0 || jj >= g.w) continue;
          const T* src = img + (ii * g.w + jj) * g.c;
          T* __restrict__ dst = acc + (a * g.kw + b) * g.c * o;
          for (int64_t c = 0; c < g.c; ++c) {
            const T v = src[c];
            for (int64_t k = 0; k < o; ++k) dst[c * o + k] += v * grad[k];
          }
        }
      }
    }
  }
}

void Gemm(CBLAS_TRANSPOSE ta, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, float beta, float* c) {
  scipy_cblas_sgemm(CblasRowMajor, ta, CblasNoTrans, m, n, k, 1.0f, a, lda, b, n, beta, c, n);
}

void Gemm(CBLAS_TRANSPOSE ta, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
          const double* b, double beta, double* c) {
  scipy_cblas_dgemm(CblasRowMajor, ta, CblasNoTrans, m, n, k, 1.0, a, lda, b, n, beta, c, n);
}

// The work items: (group, block of images) pairs. Blocks are as large as the cache allows,
// but at least two per thread in all, and of equal size, so the threads finish together.
struct Blocks {
  int64_t per_group, size, count;
  Blocks(const Geometry& g, int64_t elem, int64_t threads) {
    const int64_t by_cache = (g.images + g.block(elem) - 1) / g.block(elem);
    const int64_t by_threads = (2 * threads + g.groups - 1) / g.groups;
    const int64_t wanted = std::min(g.images, std::max(by_cache, by_threads));
    size = std::max<int64_t>(1, (g.images + std::max<int64_t>(1, wanted) - 1) /
                                    std::max<int64_t>(1, wanted));
    per_group = (g.images + size - 1) / size;
    count = g.groups * per_group;
  }
};

int64_t Threads(ffi::ThreadPool& pool) { return std::max<int64_t>(1, pool.num_threads()); }

// y[g] = patches(x[g]) @ w[g], one GEMM per block of images.
template <typename T>
void Forward(ffi::ThreadPool& pool, const T* x, const T* w, T* y, const Geometry& g) {
  const int64_t pix = g.pixels(), depth = g.depth(), in_img = g.h * g.w * g.c;
  const Blocks blocks(g, sizeof(T), Threads(pool));
  const int64_t workers = Workers(pool, blocks.count);
  const int64_t scratch = g.identity_patches() ? 0 : std::min(blocks.size, g.images) * pix * depth;
  std::unique_ptr<T[]> cols(new T[workers * scratch]);  // uninitialized: im2col fills it
  ParallelFor(pool, blocks.count, workers, [&](int64_t item, int64_t worker) {
    const int64_t grp = item / blocks.per_group, n0 = (item % blocks.per_group) * blocks.size;
    const int64_t bn = std::min(blocks.size, g.images - n0);
    const T* a = x + (grp * g.images + n0) * in_img;
    const T* wg = w + grp * depth * g.o;
    T* out = y + (grp * g.images + n0) * pix * g.o;
    if (depth <= kDirectDepth) {
      for (int64_t n = 0; n < bn; ++n) DirectForward(a + n * in_img, wg, out + n * pix * g.o, g);
      return;
    }
    if (!g.identity_patches()) {
      T* buf = cols.get() + worker * scratch;
      for (int64_t n = 0; n < bn; ++n) Im2col(a + n * in_img, g, buf + n * pix * depth);
      a = buf;
    }
    Gemm(CblasNoTrans, bn * pix, g.o, depth, a, depth, wg, T(0), out);
  });
}

// dw[g] = sum over blocks of patches(x[g])^T @ dy[g]. Each group's blocks are split into a
// fixed number of contiguous runs (a function of the shapes and the pool's size only); each
// run accumulates into its own copy of dw, and the copies are summed in run order, so the
// result does not depend on which thread ran which run: the gradient is deterministic.
template <typename T>
void KernelGrad(ffi::ThreadPool& pool, const T* x, const T* dy, T* dw, const Geometry& g) {
  const int64_t pix = g.pixels(), depth = g.depth(), in_img = g.h * g.w * g.c;
  const int64_t kernel = depth * g.o;
  const Blocks blocks(g, sizeof(T), Threads(pool));
  const int64_t threads = Threads(pool);
  const int64_t runs = std::clamp<int64_t>((4 * threads + g.groups - 1) / g.groups, 1,
                                           std::max<int64_t>(1, blocks.per_group));
  const int64_t items = g.groups * runs;
  const int64_t workers = Workers(pool, items);
  const int64_t scratch = g.identity_patches() ? 0 : std::min(blocks.size, g.images) * pix * depth;
  std::unique_ptr<T[]> cols(new T[workers * scratch]);  // uninitialized: im2col fills it
  std::vector<T> partial(items * kernel, T(0));
  ParallelFor(pool, items, workers, [&](int64_t item, int64_t worker) {
    const int64_t grp = item / runs, run = item % runs;
    T* acc = partial.data() + item * kernel;
    // Run `run` of `runs` covers blocks [first, last) of the group.
    const int64_t first = run * blocks.per_group / runs, last = (run + 1) * blocks.per_group / runs;
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t n0 = blk * blocks.size, bn = std::min(blocks.size, g.images - n0);
      const T* a = x + (grp * g.images + n0) * in_img;
      const T* grad = dy + (grp * g.images + n0) * pix * g.o;
      if (depth <= kDirectDepth) {
        for (int64_t n = 0; n < bn; ++n) {
          DirectKernelGrad(a + n * in_img, grad + n * pix * g.o, acc, g);
        }
        continue;
      }
      if (!g.identity_patches()) {
        T* buf = cols.get() + worker * scratch;
        for (int64_t n = 0; n < bn; ++n) Im2col(a + n * in_img, g, buf + n * pix * depth);
        a = buf;
      }
      Gemm(CblasTrans, depth, g.o, bn * pix, a, depth, grad, T(1), acc);
    }
  });
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    T* out = dw + grp * kernel;
    const T* src = partial.data() + grp * runs * kernel;
    std::copy(src, src + kernel, out);
    for (int64_t run = 1; run < runs; ++run) {
      for (int64_t i = 0; i < kernel; ++i) out[i] += src[run * kernel + i];
    }
  }
}

Geometry MakeGeometry(ffi::AnyBuffer::Dimensions x, ffi::AnyBuffer::Dimensions w,
                      ffi::AnyBuffer::Dimensions y, int64_t pad_top, int64_t pad_left) {
  return Geometry{x[0], x[1], x[2], x[3], x[4], w[1], w[2], w[4], y[2], y[3], pad_top, pad_left};
}

// Both handlers: (input, second operand) -> result, where `kernel_dims` is whichever of the
// three holds the kernel [G, KH, KW, C, O] and `out_dims` the [G, N, OH, OW, O] one. `run` is
// called with a typed null pointer that selects float or double.
template <typename Run>
ffi::Error Dispatch(ffi::AnyBuffer x, ffi::AnyBuffer::Dimensions kernel_dims,
                    ffi::AnyBuffer::Dimensions out_dims, int64_t pad_top, int64_t pad_left,
                    const Run& run) {
  if (x.dimensions().size() != 5 || kernel_dims.size() != 5 || out_dims.size() != 5) {
    return ffi::Error::InvalidArgument("metajax conv: operands must have rank 5");
  }
  const Geometry g = MakeGeometry(x.dimensions(), kernel_dims, out_dims, pad_top, pad_left);
  switch (x.element_type()) {
    case ffi::F32:
      run(static_cast<float*>(nullptr), g);
      return ffi::Error::Success();
    case ffi::F64:
      run(static_cast<double*>(nullptr), g);
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("metajax conv: float32 and float64 only");
  }
}

ffi::Error ConvForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                           ffi::Result<ffi::AnyBuffer> y, int64_t pad_top, int64_t pad_left) {
  return Dispatch(x, w.dimensions(), y->dimensions(), pad_top, pad_left,
                  [&](auto* type, const Geometry& g) {
                    using T = std::remove_pointer_t<decltype(type)>;
                    Forward(pool, x.typed_data<T>(), w.typed_data<T>(), y->typed_data<T>(), g);
                  });
}

ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                              ffi::Result<ffi::AnyBuffer> dw, int64_t pad_top,
                              int64_t pad_left) {
  return Dispatch(x, dw->dimensions(), dy.dimensions(), pad_top, pad_left,
                  [&](auto* type, const Geometry& g) {
                    using T = std::remove_pointer_t<decltype(type)>;
                    KernelGrad(pool, x.typed_data<T>(), dy.typed_data<T>(), dw->typed_data<T>(),
                               g);
                  });
}

// One signature for both: thread pool, two operands, one result, the top and left padding.
auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MetajaxConvForward, ConvForwardImpl, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MetajaxConvKernelGrad, ConvKernelGradImpl, Binding());
