// A CPU emulator of the CUDA C++ subset that gpucal's kernels (kernels/cuda_src.py, decode_src.py) use, so that
// their real source runs on a machine without a GPU; emu_build.py prepares the source (module docstring there:
// what this proves and what it does not).
//
// Execution: one block at a time, in grid order (x fastest); the threads of a block are fibers (ucontext) of one
// OS thread, each run until it waits: at __syncthreads (a block barrier; threads that returned no longer count,
// as on the hardware), or at a warp collective (__shfl_xor_sync, mma.sync: every lane of the warp must arrive; a
// lane that returned or waits elsewhere is a deadlock, which fails the launch with what each warp waits at).
// Scheduling is deterministic; emu_set_order picks one of four: bit 0 reverses the order of threads and blocks,
// bit 1 makes it greedy (always the first runnable thread in that order, so one warp runs as far ahead of the
// others as the barriers let it) instead of round robin (the warps in step). Shared arrays are filled with 0xff
// bytes (NaN as floats) by the first thread of each block to declare them (emu_shared, which emu_build.py places
// after each __shared__ declaration), so a read that no barrier orders after its write shows in the result in some
// order.
// Replaced primitives (emu_build.py removes the source's inline-PTX definitions of exactly these names):
// h2f/f2h (cvt.f32.f16, cvt.rn.f16.f32: _Float16 conversions, round to nearest even), ld_stream/ld_noalloc/
// st_stream (plain 16-byte accesses that check their alignment), globaltimer (steady_clock ns), mma_f16/mma_bf16
// (mma.sync.m16n8k16.row.col.f32: each lane's A, B and C fragments where the PTX ISA's fragment tables place them;
// the 16 products of an element summed in double, rounded once to fp32).
// Launch (EMU_KERNEL entries): the argument count, each argument's size against the kernel's parameter type, the
// alignment of pointer arguments to their pointee, 1..1024 threads, grid y and z <= 65535.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <tuple>
#include <type_traits>
#include <utility>

using std::max;
using std::min;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return uint2{a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline float2 make_float2(float a, float b) { return float2{a, b}; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)

static dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }

namespace emu {

enum State { RUNNABLE, AT_WARP, AT_BLOCK, DONE };
constexpr int MAX_THREADS = 1024, MAX_WARPS = 32, STACK_BYTES = 256 << 10, PAGE = 4096;

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    dim3 tid;
    State state = DONE;
};

struct Machine {
    Fiber fibers[MAX_THREADS];
    ucontext_t scheduler;
    int threads = 0, current = 0, live = 0, at_block = 0, order = 0;
    int warp_size[MAX_WARPS], at_warp[MAX_WARPS];
    unsigned warp_round[MAX_WARPS];
    u64 shfl[MAX_WARPS][2][32];              // [warp][round parity][lane]: a lane's value in a shuffle
    u32 mma_in[MAX_WARPS][2][32][6];         // a lane's A (4) and B (2) registers in an mma
    long block_serial = 0;
    struct Shared { void* at; long serial; };
    Shared shared[64];
    int shared_count = 0;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    char error[1024] = {0};
};
static Machine M;  // this library's own (not shared with another library built from emu.h)

inline void fail(const char* what) {
    if (!M.error[0]) snprintf(M.error, sizeof M.error, "block (%u, %u, %u) thread %d: %s", blockIdx.x, blockIdx.y,
                              blockIdx.z, M.current, what);
}
inline int tid() { return M.current; }
inline void yield() { swapcontext(&M.fibers[M.current].ctx, &M.scheduler); }

// The first thread of a block to declare a shared array fills it with 0xff bytes (emu_build.poison_shared).
inline void poison_shared(void* at, size_t bytes) {
    for (int i = 0; i < M.shared_count; ++i)
        if (M.shared[i].at == at) {
            if (M.shared[i].serial != M.block_serial) { memset(at, 0xff, bytes); M.shared[i].serial = M.block_serial; }
            return;
        }
    if (M.shared_count == 64) { fail("more than 64 shared arrays in one kernel"); return; }
    M.shared[M.shared_count++] = Machine::Shared{at, M.block_serial};
    memset(at, 0xff, bytes);
}

inline void release_block() {
    for (int i = 0; i < M.threads; ++i)
        if (M.fibers[i].state == AT_BLOCK) M.fibers[i].state = RUNNABLE;
    M.at_block = 0;
}

inline void sync_block() {
    M.fibers[M.current].state = AT_BLOCK;
    if (++M.at_block == M.live) release_block();  // the last to arrive goes on
    if (M.fibers[M.current].state == AT_BLOCK) yield();
}

// Waits for every lane of the calling thread's warp (a collective: its values sit in the buffers of parity
// warp_round & 1, read after the wait; the next collective writes the other parity, so no second wait is needed).
inline void sync_warp() {
    const int w = M.current / 32;
    M.fibers[M.current].state = AT_WARP;
    if (++M.at_warp[w] == M.warp_size[w]) {
        for (int i = 32 * w; i < 32 * w + M.warp_size[w]; ++i) M.fibers[i].state = RUNNABLE;
        M.at_warp[w] = 0;
        ++M.warp_round[w];
    }
    if (M.fibers[M.current].state == AT_WARP) yield();
}

inline void entry(int) {
    M.body(M.body_arg);
    M.fibers[M.current].state = DONE;
    --M.live;
    if (M.live > 0 && M.at_block == M.live) release_block();
    yield();
}

inline void describe_deadlock() {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "deadlock: %d of %d live threads at __syncthreads;", M.at_block, M.live);
    for (int w = 0; w * 32 < M.threads && n < (int)sizeof msg - 40; ++w)
        if (M.at_warp[w]) n += snprintf(msg + n, sizeof msg - n, " warp %d: %d of %d lanes at a collective;", w,
                                        M.at_warp[w], M.warp_size[w]);
    fail(msg);
}

// Runs body(arg) as every thread of every block of the grid. Returns 0, or 1 with M.error set.
inline int run_grid(dim3 grid, dim3 block, void (*body)(void*), void* arg) {
    const long n = (long)block.x * block.y * block.z;
    if (n < 1 || n > MAX_THREADS) { fail("a block must hold 1 to 1024 threads"); return 1; }
    if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535) {
        fail("grid: x >= 1, 1 <= y, z <= 65535");
        return 1;
    }
    M.threads = (int)n;
    M.shared_count = 0;
    M.body = body;
    M.body_arg = arg;
    gridDim = grid;
    blockDim = block;
    for (int i = 0; i < M.threads; ++i) {
        Fiber& f = M.fibers[i];
        if (!f.stack) {  // a guard page below each stack: an overflow faults instead of corrupting
            void* p = mmap(nullptr, STACK_BYTES + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
            if (p == MAP_FAILED) { fail("no memory for the thread stacks"); return 1; }
            mprotect(p, PAGE, PROT_NONE);
            f.stack = (char*)p + PAGE;
        }
        f.tid = dim3{(unsigned)(i % block.x), (unsigned)((i / block.x) % block.y), (unsigned)(i / (block.x * block.y))};
    }
    for (int w = 0; w * 32 < M.threads; ++w) M.warp_size[w] = std::min(32, M.threads - 32 * w);
    const long blocks = (long)grid.x * grid.y * grid.z;
    for (long bi = 0; bi < blocks && !M.error[0]; ++bi) {
        const long b = (M.order & 1) ? blocks - 1 - bi : bi;
        ++M.block_serial;
        blockIdx = dim3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((long)grid.x * grid.y))};
        for (int i = 0; i < M.threads; ++i) {
            Fiber& f = M.fibers[i];
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack;
            f.ctx.uc_stack.ss_size = STACK_BYTES;
            f.ctx.uc_link = nullptr;
            makecontext(&f.ctx, (void (*)())entry, 1, 0);
            f.state = RUNNABLE;
        }
        M.live = M.threads;
        M.at_block = 0;
        for (int w = 0; w < MAX_WARPS; ++w) { M.at_warp[w] = 0; M.warp_round[w] = 0; }
        int cursor = 0;
        const bool greedy = M.order & 2;
        while (M.live > 0) {
            int pick = -1;
            for (int k = 0; k < M.threads; ++k) {
                const int i = (M.order & 1) ? (M.threads - 1 - (cursor + k) % M.threads) : (cursor + k) % M.threads;
                if (M.fibers[i].state == RUNNABLE) { pick = i; cursor = greedy ? 0 : (cursor + k + 1) % M.threads; break; }
            }
            if (pick < 0) { describe_deadlock(); return 1; }
            M.current = pick;
            threadIdx = M.fibers[pick].tid;
            swapcontext(&M.scheduler, &M.fibers[pick].ctx);
        }
    }
    return M.error[0] ? 1 : 0;
}

template <class T>
inline void check_aligned(const void* p, const char* what) {
    if ((uintptr_t)p % alignof(T)) fail(what);
}

template <class K, class Tuple>
struct Call {
    K kernel;
    Tuple args;
    static void run(void* self) {
        Call* c = static_cast<Call*>(self);
        std::apply(c->kernel, c->args);
    }
};

template <class P>
inline bool pointer_aligned(const P& p) {
    if constexpr (std::is_pointer_v<P>) {
        using T = std::remove_cv_t<std::remove_pointer_t<P>>;
        if constexpr (!std::is_void_v<T>) return (uintptr_t)p % alignof(T) == 0;
    }
    return true;
}

// Launches kernel k: dims = grid x, y, z, block x, y, z; params[i] points at argument i's bytes, sizes[i] its size.
template <class... P, size_t... I>
inline int launch(void (*k)(P...), const unsigned* dims, void* const* params, const int* sizes, int count,
                  std::index_sequence<I...>) {
    M.error[0] = 0;
    M.current = 0;
    constexpr int N = sizeof...(P);
    if (count != N) {
        snprintf(M.error, sizeof M.error, "the kernel takes %d arguments, %d given", N, count);
        return 1;
    }
    const int want[N + 1] = {(int)sizeof(P)..., 0};
    for (int i = 0; i < N; ++i)
        if (sizes[i] != want[i]) {
            snprintf(M.error, sizeof M.error, "argument %d: %d bytes given, the kernel's parameter has %d", i, sizes[i],
                     want[i]);
            return 1;
        }
    std::tuple<P...> args;
    (memcpy((void*)&std::get<I>(args), params[I], sizeof(P)), ...);
    const bool aligned[N + 1] = {pointer_aligned(std::get<I>(args))..., true};
    for (int i = 0; i < N; ++i)
        if (!aligned[i]) {
            snprintf(M.error, sizeof M.error, "argument %d: a pointer not aligned to its element type", i);
            return 1;
        }
    Call<void (*)(P...), std::tuple<P...>> call{k, args};
    return run_grid(dim3{dims[0], dims[1], dims[2]}, dim3{dims[3], dims[4], dims[5]},
                    &Call<void (*)(P...), std::tuple<P...>>::run, &call);
}

}  // namespace emu

inline void __syncthreads() { emu::sync_block(); }
#define emu_shared(NAME) emu::poison_shared((void*)&(NAME), sizeof(NAME))

template <class T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    const int t = emu::tid(), w = t / 32, lane = t % 32;
    if (mask != 0xffffffffu || width != 32) emu::fail("only full-warp shuffles (mask 0xffffffff, width 32) are emulated");
    if (emu::M.warp_size[w] != 32) emu::fail("a full-mask shuffle in a warp of fewer than 32 threads");
    u64 bits = 0;
    memcpy(&bits, &value, sizeof(T));
    const int parity = emu::M.warp_round[w] & 1;
    emu::M.shfl[w][parity][lane] = bits;
    emu::sync_warp();
    const int src = (lane ^ lane_mask) & 31;
    T out;
    memcpy(&out, &emu::M.shfl[w][parity][src], sizeof(T));
    return out;
}

template <class T>
inline T __ldg(const T* p) {
    emu::check_aligned<T>(p, "__ldg: a misaligned load");
    return *p;
}

// ---- the inline-PTX helpers of cuda_src.PRELUDE and the copy kernels, replaced ----
inline float h2f(u16 h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
inline u16 f2h(float f) { _Float16 x = (_Float16)f; u16 h; memcpy(&h, &x, 2); return h; }
inline uint4 ld_stream(const uint4* p) { emu::check_aligned<uint4>(p, "ld_stream: a misaligned 16-byte load"); return *p; }
inline uint4 ld_noalloc(const uint4* p) { emu::check_aligned<uint4>(p, "ld_noalloc: a misaligned 16-byte load"); return *p; }
inline void st_stream(uint4* p, uint4 v) { emu::check_aligned<uint4>(p, "st_stream: a misaligned 16-byte store"); *p = v; }
inline u64 globaltimer() {
    return (u64)std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now().time_since_epoch()).count();
}

namespace emu {
inline float half_value(u32 reg, int high, bool bf16) {
    const u16 h = (u16)(high ? reg >> 16 : reg & 0xffffu);
    return bf16 ? __uint_as_float((u32)h << 16) : h2f(h);
}
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D (16x8) = A (16x16) B (16x8) + C. PTX ISA fragment tables,
// g = lane / 4, t = lane % 4: A register r of lane (g, t) holds rows g (r = 0, 2) or g + 8 (r = 1, 3), columns
// 2t, 2t + 1 (r < 2) or 2t + 8, 2t + 9 (r >= 2), the lower column in the low half; B register r holds rows
// 2t, 2t + 1 (+8 for r = 1) of column g; C/D c0, c1 at row g, columns 2t, 2t + 1, c2, c3 at row g + 8.
inline void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1, bool bf16) {
    const int t = tid(), w = t / 32, lane = t % 32;
    if (M.warp_size[w] != 32) fail("mma.sync in a warp of fewer than 32 threads");
    const int parity = M.warp_round[w] & 1;
    u32* mine = M.mma_in[w][parity][lane];
    mine[0] = a0; mine[1] = a1; mine[2] = a2; mine[3] = a3; mine[4] = b0; mine[5] = b1;
    sync_warp();
    u32 (*regs)[6] = M.mma_in[w][parity];
    auto A = [&](int row, int k) {
        return half_value(regs[4 * (row % 8) + (k % 8) / 2][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k & 1, bf16);
    };
    auto B = [&](int k, int col) { return half_value(regs[4 * col + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)], k & 1, bf16); };
    const int g = lane / 4, tg = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = g + (i >= 2 ? 8 : 0), col = 2 * tg + (i & 1);
        double s = c[i];
        for (int k = 0; k < 16; ++k) s += (double)A(row, k) * (double)B(k, col);
        c[i] = (float)s;
    }
}
}  // namespace emu

inline void mma_f16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    emu::mma(c, a0, a1, a2, a3, b0, b1, false);
}
inline void mma_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    emu::mma(c, a0, a1, a2, a3, b0, b1, true);
}

extern "C" const char* emu_error() { return emu::M.error; }
extern "C" void emu_set_order(int order) { emu::M.order = order; }

namespace emu {
template <class F> struct Arity;
template <class... P> struct Arity<void (*)(P...)> { static constexpr size_t value = sizeof...(P); };
}  // namespace emu

// One entry point per kernel: emu_run_NAME(dims[6], params, sizes, count) -> 0, or 1 with emu_error() set.
#define EMU_KERNEL(NAME)                                                                                    \
    extern "C" int emu_run_##NAME(const unsigned* dims, void* const* params, const int* sizes, int count) { \
        return emu::launch(NAME, dims, params, sizes, count,                                                \
                           std::make_index_sequence<emu::Arity<decltype(&NAME)>::value>{});                 \
    }
