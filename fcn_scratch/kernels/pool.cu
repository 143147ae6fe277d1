// Max pooling and unpooling in CUDA C: the port of the pooling kernels in cpu.py (Numba)
// and reference.py.
//
// Indices are int64 flat offsets h*W + w into each input (H, W) plane, as in PyTorch.
// Padded cells never win a window; ties keep the first maximum in row-major tap order;
// a NaN wins (the last one, if several), as in PyTorch.
// maxunpool2d_forward is a scatter-add (values with the same index are summed in raster
// order of the pooled map); it is also the gradient of max pooling, so cuda.py's
// maxpool2d_backward launches it too. maxunpool2d_backward is the matching gather.
// An index k in [-H*W, 0) counts from the end of its plane, as NumPy indexing (and so the
// reference and the Numba kernels) does: -1 is what a window made only of padding records.
// Indices are not validated on the GPU (that would cost a sync with the host): one outside
// [-H*W, H*W) is dropped by the scatter and reads 0 in the gather, never memory outside the
// plane, and the pair stays adjoint.
//
// Every kernel walks a 64-bit flat index with a grid-stride loop, so any grid covers any
// size (fcn_scratch/kernels/launch.py picks the grid); offsets within one plane are
// 32-bit. Each output element is written by exactly one thread: no atomics, and results
// are bitwise the reference's whatever the launch configuration.
// Each kernel is a template, instantiated as <name>_f32 and <name>_f64 at the bottom.

// -inf, built from its bits (no headers under NVRTC).
template <typename T> __device__ __forceinline__ T minus_infinity();
template <> __device__ __forceinline__ float minus_infinity<float>()
{
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double minus_infinity<double>()
{
    return __longlong_as_double(0xfff0000000000000LL);
}

template <typename T>
__device__ void maxpool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                  long long* __restrict__ idx, int H, int W, int KH, int KW,
                                  int SH, int SW, int PH, int PW, int DH, int DW, int OH,
                                  int OW, long long total)
{
    // Thread mapping: one thread per output (n, c, oy, ox); it scans its window in
    // row-major tap order and writes both the maximum and its flat index.
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const long long nc = t / ((long long)OH * OW);  // n*C + c
        const int p = (int)(t - nc * OH * OW), oy = p / OW, ox = p % OW;
        const T* plane = x + nc * H * W;
        T best = minus_infinity<T>();  // what a window made only of padding reports
        long long best_idx = -1;
        for (int i = 0; i < KH; ++i) {
            const int h = oy * SH - PH + i * DH;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < KW; ++j) {
                const int w = ox * SW - PW + j * DW;
                if (w < 0 || w >= W) continue;
                const T v = plane[h * W + w];
                if (best_idx < 0 || v > best || v != v) {  // NaN wins, as in PyTorch
                    best = v;
                    best_idx = h * W + w;
                }
            }
        }
        y[t] = best;
        idx[t] = best_idx;
    }
}

template <typename T>
__device__ void maxunpool2d_forward(const T* __restrict__ x, const long long* __restrict__ idx,
                                    T* __restrict__ y, int P, int H, int W, int bands,
                                    long long total)
{
    // Thread mapping: one thread per (n, c, band of rows of y); bands split each (H, W)
    // plane of y into `bands` runs of whole rows, and the thread owns its run. It zeroes the
    // run, then walks the P = OH*OW pooled cells of its plane in raster order and adds the
    // values whose index lands in the run: every element of y has a single owner that adds
    // its contributions in the reference's order. The threads of one plane read the same
    // index at the same time (neighbours in t), so a warp reads each index once.
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const long long nc = t / bands;  // n*C + c
        const int band = (int)(t - nc * bands);
        const int lo = (int)((long long)band * H / bands) * W;       // first owned offset
        const int hi = (int)((long long)(band + 1) * H / bands) * W;  // one past the last
        T* out = y + nc * H * W;
        for (int k = lo; k < hi; ++k) out[k] = T(0);
        const T* val = x + nc * P;
        const long long* at = idx + nc * P;
        for (int p = 0; p < P; ++p) {
            const long long k = at[p] < 0 ? at[p] + (long long)H * W : at[p];
            if (lo <= k && k < hi) out[k] += val[p];
        }
    }
}

template <typename T>
__device__ void maxunpool2d_backward(const T* __restrict__ dy, const long long* __restrict__ idx,
                                     T* __restrict__ dx, int P, int HW, long long total)
{
    // Thread mapping: one thread per pooled cell (n, c, oy, ox); it gathers the gradient
    // at the cell's recorded index in plane (n, c) of dy.
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const long long nc = t / P;  // n*C + c
        const long long k = idx[t] < 0 ? idx[t] + HW : idx[t];
        dx[t] = (0 <= k && k < HW) ? dy[nc * HW + k] : T(0);
    }
}

// extern "C" entry points, <name>_f32 and <name>_f64, with parameters:
//   maxpool2d_forward    (x, y, idx, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, total)
//   maxunpool2d_forward  (x, idx, y, P, H, W, bands, total)   total = N*C*bands
//   maxunpool2d_backward (dy, idx, dx, P, HW, total)          total = N*C*P
#define FCN_POOL_ENTRIES(suffix, T)                                                         \
    extern "C" __global__ void maxpool2d_forward_##suffix(                                  \
        const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ idx, int H,     \
        int W, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int OH,      \
        int OW, long long total)                                                            \
    {                                                                                       \
        maxpool2d_forward<T>(x, y, idx, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW,       \
                             total);                                                        \
    }                                                                                       \
    extern "C" __global__ void maxunpool2d_forward_##suffix(                                \
        const T* __restrict__ x, const long long* __restrict__ idx, T* __restrict__ y,      \
        int P, int H, int W, int bands, long long total)                                    \
    {                                                                                       \
        maxunpool2d_forward<T>(x, idx, y, P, H, W, bands, total);                           \
    }                                                                                       \
    extern "C" __global__ void maxunpool2d_backward_##suffix(                               \
        const T* __restrict__ dy, const long long* __restrict__ idx, T* __restrict__ dx,    \
        int P, int HW, long long total)                                                     \
    {                                                                                       \
        maxunpool2d_backward<T>(dy, idx, dx, P, HW, total);                                 \
    }

FCN_POOL_ENTRIES(f32, float)
FCN_POOL_ENTRIES(f64, double)
