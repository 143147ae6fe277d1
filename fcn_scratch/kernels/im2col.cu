// im2col and col2im in CUDA C: the port of im2col/col2im in cpu.py (Numba) and reference.py.
//
// Layout (see reference.py): x is (N, C, H, W); col is (N, C*KH*KW, OH*OW), row
// (c*KH + i)*KW + j holds kernel tap (i, j) of channel c, column oy*OW + ox the output
// position. Tap (i, j) of output (oy, ox) reads input (oy*SH - PH + i*DH, ox*SW - PW + j*DW);
// taps outside the image read 0.
//
// Every kernel walks a 64-bit flat index with a grid-stride loop, so any grid covers any
// size (fcn_scratch/kernels/launch.py picks the grid); offsets within one (H, W) or
// (OH, OW) plane are 32-bit. Each output element is written by exactly one thread: no
// atomics, and results do not depend on the launch configuration.
// Each kernel is a template, instantiated as <name>_f32 and <name>_f64 at the bottom.

template <typename T>
__device__ void im2col(const T* __restrict__ x, T* __restrict__ col,
                       int H, int W, int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW, int OH, int OW, long long total)
{
    // Thread mapping: one thread per col element (n, c, i, j, oy, ox), flat in col's order.
    const long long step = (long long)gridDim.x * blockDim.x;
    const int plane = OH * OW, taps = KH * KW;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const long long r = t / plane;  // (n*C + c)*KH*KW + tap
        const int p = (int)(t - r * plane), tap = (int)(r % taps);
        const long long nc = r / taps;  // n*C + c
        const int oy = p / OW, ox = p % OW, i = tap / KW, j = tap % KW;
        const int h = oy * SH - PH + i * DH;
        const int w = ox * SW - PW + j * DW;
        const bool inside = 0 <= h && h < H && 0 <= w && w < W;
        col[t] = inside ? x[(nc * H + h) * W + w] : T(0);
    }
}

template <typename T>
__device__ void col2im(const T* __restrict__ col, T* __restrict__ x,
                       int H, int W, int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW, int OH, int OW, long long total)
{
    // Thread mapping: one thread per image element (n, c, h, w). A gather: output row oy
    // reads h through tap i = (h + PH - oy*SH) / DH when that is a whole number in [0, KH),
    // so the thread walks the output rows from the last that can reach h down to the first,
    // i.e. taps in increasing order (likewise columns), and sums in the reference's
    // row-major tap order: the result is bitwise the reference's.
    const long long step = (long long)gridDim.x * blockDim.x;
    const int plane = OH * OW, reach_h = (KH - 1) * DH, reach_w = (KW - 1) * DW;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const long long nc = t / ((long long)H * W);  // n*C + c
        const int hw = (int)(t - nc * H * W), h = hw / W, w = hw % W;
        const int sy = h + PH, sx = w + PW;  // = oy*SH + i*DH and ox*SW + j*DW
        T sum = T(0);
        for (int oy = min(sy / SH, OH - 1); oy >= 0 && sy - oy * SH <= reach_h; --oy) {
            if ((sy - oy * SH) % DH != 0) continue;
            const int i = (sy - oy * SH) / DH;
            for (int ox = min(sx / SW, OW - 1); ox >= 0 && sx - ox * SW <= reach_w; --ox) {
                if ((sx - ox * SW) % DW != 0) continue;
                const int j = (sx - ox * SW) / DW;
                const long long row = (nc * KH + i) * KW + j;
                sum += col[row * plane + (long long)oy * OW + ox];
            }
        }
        x[t] = sum;
    }
}

// extern "C" entry points: im2col_f32, im2col_f64, col2im_f32, col2im_f64. Parameters:
// (input, output, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, total), where total is the
// number of output elements (col's for im2col, x's for col2im).
#define FCN_IM2COL_ENTRY(name, suffix, T)                                                   \
    extern "C" __global__ void name##_##suffix(                                             \
        const T* __restrict__ in, T* __restrict__ out, int H, int W, int KH, int KW,        \
        int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW, long long total)    \
    {                                                                                       \
        name<T>(in, out, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, total);              \
    }

FCN_IM2COL_ENTRY(im2col, f32, float)
FCN_IM2COL_ENTRY(im2col, f64, double)
FCN_IM2COL_ENTRY(col2im, f32, float)
FCN_IM2COL_ENTRY(col2im, f64, double)
