// cuda_emu.h: just enough CUDA for g++ to compile fcn_scratch's .cu kernels unchanged and run
// a launch on the CPU.
//
// The kernels use no shared memory, no barriers, no warp functions and no atomics: each
// thread only reads its inputs and writes its own outputs. For such kernels, running the
// threads one after another is a faithful execution, so the emulation is a loop over every
// block and every thread of the launch's grid, with blockIdx/threadIdx set before each call.
//
// Launches take their arguments the way cuLaunchKernel does: an array of pointers, one per
// kernel parameter (the Python side, emulator.py, builds it with ctypes).
//
// cuda_emu::launch_tracked checks the "each output element has one writer" claim: it runs
// each thread alone against output buffers filled with a sentinel byte, and counts, for
// every element, how many threads changed it. A thread that read another thread's output
// would see the sentinel and go wrong, so a correct result also shows that no thread
// depends on another.
#pragma once

#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
// __restrict__ is a g++ extension already.

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

// CUDA's device-side int min; float and 64-bit overloads are not needed by the kernels.
inline int min(int a, int b) { return a < b ? a : b; }

inline float __int_as_float(int bits)
{
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline double __longlong_as_double(long long bits)
{
    double value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

namespace cuda_emu {

// Call kernel(*params[0], *params[1], ...) with each pointer cast to its parameter's type.
template <typename... Args, std::size_t... I>
void call(void (*kernel)(Args...), void* const* params, std::index_sequence<I...>)
{
    kernel(*static_cast<Args*>(params[I])...);
}

// Visit every (block, thread) of the grid in order, setting the built-in index variables.
template <typename Body>
void for_each_thread(const unsigned* grid, const unsigned* block, Body body)
{
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx)
                for (unsigned tz = 0; tz < block[2]; ++tz)
                    for (unsigned ty = 0; ty < block[1]; ++ty)
                        for (unsigned tx = 0; tx < block[0]; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            body();
                        }
}

template <typename... Args>
void launch(void (*kernel)(Args...), const unsigned* grid, const unsigned* block,
            void* const* params)
{
    for_each_thread(grid, block,
                    [&] { call(kernel, params, std::index_sequence_for<Args...>{}); });
}

const unsigned char SENTINEL = 0xA5;

// Like launch, but each thread runs alone on sentinel-filled outputs; writes[e] (over all
// outputs, concatenated) counts the threads that changed element e. The outputs end up
// holding the union of all threads' writes.
template <typename... Args>
void launch_tracked(void (*kernel)(Args...), const unsigned* grid, const unsigned* block,
                    void* const* params, int n_out, void* const* outs,
                    const long long* n_elems, const int* elem_bytes, int* writes)
{
    std::vector<std::vector<unsigned char>> result(n_out);
    for (int b = 0; b < n_out; ++b)
        result[b].assign(n_elems[b] * elem_bytes[b], SENTINEL);
    for_each_thread(grid, block, [&] {
        for (int b = 0; b < n_out; ++b)
            std::memset(outs[b], SENTINEL, result[b].size());
        call(kernel, params, std::index_sequence_for<Args...>{});
        int* count = writes;
        for (int b = 0; b < n_out; ++b) {
            const unsigned char* bytes = static_cast<const unsigned char*>(outs[b]);
            const std::vector<unsigned char> untouched(elem_bytes[b], SENTINEL);
            for (long long e = 0; e < n_elems[b]; ++e, ++count) {
                const unsigned char* elem = bytes + e * elem_bytes[b];
                if (std::memcmp(elem, untouched.data(), elem_bytes[b]) != 0) {
                    ++*count;
                    std::memcpy(&result[b][e * elem_bytes[b]], elem, elem_bytes[b]);
                }
            }
        }
    });
    for (int b = 0; b < n_out; ++b)
        std::memcpy(outs[b], result[b].data(), result[b].size());
}

}  // namespace cuda_emu

// Export a kernel to ctypes as emu_<name>(grid, block, params) and
// emu_tracked_<name>(grid, block, params, n_out, outs, n_elems, elem_bytes, writes).
#define CUDA_EMU_EXPORT(name)                                                              \
    extern "C" void emu_##name(const unsigned* grid, const unsigned* block,                \
                               void* const* params)                                        \
    {                                                                                      \
        cuda_emu::launch(name, grid, block, params);                                       \
    }                                                                                      \
    extern "C" void emu_tracked_##name(const unsigned* grid, const unsigned* block,        \
                                       void* const* params, int n_out, void* const* outs,  \
                                       const long long* n_elems, const int* elem_bytes,    \
                                       int* writes)                                        \
    {                                                                                      \
        cuda_emu::launch_tracked(name, grid, block, params, n_out, outs, n_elems,          \
                                 elem_bytes, writes);                                      \
    }
