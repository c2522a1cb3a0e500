// Tensor-core ceilings of one GPU: for mma.sync (b1 AND-popc, s8, f16) and, on sm_90a, wgmma
// (same three types), instructions per clock per SM (clock64 on every SM) and dense tera-ops/s
// (CUDA events; 2 ops per multiply-add, for b1 per AND+popc bit pair). One JSON object per line
// on stdout. The data are garbage: only throughput is measured. Run by tools/gpu/ceilings.py:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -DWITH_WGMMA tc_ceiling.cu -o tc_ceiling
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <type_traits>

// ---- mma.sync: register operands, NACC independent accumulators per warp ----------------------
enum Kind { kB1 = 0, kS8 = 1, kF16 = 2 };

#define MMA_SYNC(shape_types)                                                                   \
  asm volatile("mma.sync.aligned." shape_types " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

template <int KIND>
__device__ __forceinline__ void mma(uint32_t (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (KIND == kB1) MMA_SYNC("m16n8k256.row.col.s32.b1.b1.s32.and.popc");
  else if constexpr (KIND == kS8) MMA_SYNC("m16n8k32.row.col.s32.s8.s8.s32");
  else MMA_SYNC("m16n8k16.row.col.f32.f16.f16.f32");  // f32 bits live in the u32 registers
}

constexpr int kNacc = 8;

// The result feeds a store that never happens (sink) so that no MMA is dead code.
__device__ __forceinline__ void keep(uint32_t s, uint32_t* sink) {
  if (s == 0x12345678u) sink[0] = s;
}

template <int KIND>
__global__ void mma_sync_probe(int iters, long long* cycles, uint32_t* sink) {
  uint32_t a[4], c[kNacc][4] = {};
  for (int i = 0; i < 4; ++i) a[i] = 0x9E3779B9u * (threadIdx.x + i);
  const uint32_t b0 = a[0] ^ 0x5555u, b1 = a[1] ^ 0xAAAAu;
  __syncthreads();
  const long long t0 = clock64();
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int j = 0; j < kNacc; ++j) mma<KIND>(c[j], a, b0, b1);
  }
  __syncthreads();
  if (threadIdx.x == 0) cycles[blockIdx.x] = clock64() - t0;
  uint32_t s = 0;
  for (int j = 0; j < kNacc; ++j) s += c[j][0] ^ c[j][1] ^ c[j][2] ^ c[j][3];
  keep(s, sink);
}

// The fused GEMM's inner step (csrc/cuda/bitplane_gemm_kernel.cuh): 4 A + 2 B ldmatrix.x4, then
// 4 x 4 BMMA per 256-bit step, 8 warps over a 128 x 128 stacked tile with the XOR swizzle.
__global__ void fused_step_probe(int iters, long long* cycles, uint32_t* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  for (int i = threadIdx.x; i < 256 * 64 / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = i * 2654435761u;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wa = warp / 4, wb = warp % 4;
  auto offset = [](int row, int chunk) { return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); };
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  uint32_t c[4][4][4] = {};
  const long long t0 = clock64();
  for (int it = 0; it < iters; ++it) {
    const int step = it & 1;
    uint32_t b[2][4], a[4];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int row = 128 + (wb * 32 + j * 16) % 128 + (lane & 7) + (lane >> 4) * 8;
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(b[j][0]), "=r"(b[j][1]), "=r"(b[j][2]), "=r"(b[j][3])
                   : "r"(base + offset(row, 2 * step + ((lane >> 3) & 1))));
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = wa * 64 + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                   : "r"(base + offset(row, 2 * step + (lane >> 4))));
#pragma unroll
      for (int j = 0; j < 4; ++j) mma<kB1>(c[i][j], a, b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) cycles[blockIdx.x] = clock64() - t0;
  uint32_t s = 0;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      for (int q = 0; q < 4; ++q) s ^= c[i][j][q];
  keep(s, sink);
}

// ---- wgmma (sm_90a): both operands in shared memory, m64n128, 64 accumulators per thread -------
#define D4(t, i) t(d[i]), t(d[i + 1]), t(d[i + 2]), t(d[i + 3])
#define D16(t, i) D4(t, i), D4(t, i + 4), D4(t, i + 8), D4(t, i + 12)
#define D64(t) D16(t, 0), D16(t, 16), D16(t, 32), D16(t, 48)
#define RW_U32(x) "+r"(x)
#define RW_F32(x) "+f"(x)
#define ACC64                                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "  \
  "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "  \
  "%62, %63}"
// %64, %65: the A and B descriptors; %66: scale-d (1 = accumulate).
#define WGMMA(instr, extra, rw)                                                                  \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" instr " " ACC64 ", %64, %65, p" extra ";\n}\n" \
               : D64(rw)                                                                         \
               : "l"(da), "l"(db), "r"(1))

template <int KIND, class Acc>
__device__ __forceinline__ void wgmma(Acc (&d)[64], uint64_t da, uint64_t db) {
#if defined(WITH_WGMMA)
  if constexpr (KIND == kB1) WGMMA("wgmma.mma_async.sync.aligned.m64n128k256.s32.b1.b1.and.popc", "", RW_U32);
  else if constexpr (KIND == kS8) WGMMA("wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8", "", RW_U32);
  else WGMMA("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16", ", 1, 1, 0, 0", RW_F32);
#endif
}

// Shared-memory matrix descriptor, no swizzle: start, leading and stride byte offsets (>> 4).
__device__ __forceinline__ uint64_t descriptor(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((smem_addr & 0x3FFFF) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}

constexpr int kWgmmaPerGroup = 8;
constexpr int kWgmmaSmem = 48 * 1024;

template <int KIND>
__global__ void wgmma_probe(int iters, long long* cycles, uint32_t* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  for (int i = threadIdx.x; i < kWgmmaSmem / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = i * 2654435761u;
  asm volatile("fence.proxy.async.shared::cta;\n");
  __syncthreads();
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int wg = threadIdx.x / 128;  // each warpgroup reads its own 8 KiB of A and of B
  const uint64_t da = descriptor(base + wg * 8192, 128, 256), db = descriptor(base + 16384 + wg * 8192, 128, 256);
  using Acc = std::conditional_t<KIND == kF16, float, uint32_t>;
  Acc d[64];
  for (int i = 0; i < 64; ++i) d[i] = 0;
  __syncthreads();
  const long long t0 = clock64();
  for (int it = 0; it < iters; ++it) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int k = 0; k < kWgmmaPerGroup; ++k) wgmma<KIND>(d, da + 2 * k, db + 2 * k);  // +32 bytes of K
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");  // one group stays in flight
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  __syncthreads();
  if (threadIdx.x == 0) cycles[blockIdx.x] = clock64() - t0;
  uint32_t s = 0;
  for (int i = 0; i < 64; ++i) s ^= static_cast<uint32_t>(d[i]);
  keep(s, sink);
}

// ---- host -------------------------------------------------------------------------------------
struct Probe {
  const char* name;   // JSON "probe"
  const char* type;   // b1 / s8 / f16
  const char* instr;  // mma.sync / wgmma / fused-step
  int units;          // warps (mma.sync) or warpgroups (wgmma) per SM
  int unit_threads;   // 32 or 128
  int smem;           // dynamic shared memory bytes
  int iters;
  double instr_per_unit_iter;
  double ops_per_instr;  // 2 * m * n * k
};

template <class Kernel>
void run(const Probe& p, Kernel kernel, int sms) {
  long long* cycles = nullptr;
  uint32_t* sink = nullptr;
  cudaEvent_t start, stop;
  const int threads = p.units * p.unit_threads;
  float ms = 0;
  cudaError_t e = cudaMalloc(&cycles, sms * sizeof(long long));
  if (e == cudaSuccess) e = cudaMalloc(&sink, 4);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, p.smem);
  if (e == cudaSuccess) {
    kernel<<<sms, threads, p.smem>>>(p.iters / 10, cycles, sink);  // warm-up: clocks up, code loaded
    e = cudaDeviceSynchronize();
  }
  if (e == cudaSuccess) {
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaEventRecord(start);
    kernel<<<sms, threads, p.smem>>>(p.iters, cycles, sink);  // one block per SM
    cudaEventRecord(stop);
    e = cudaEventSynchronize(stop);
    if (e == cudaSuccess) e = cudaGetLastError();
    cudaEventElapsedTime(&ms, start, stop);
  }
  long long* host = new long long[sms];
  if (e == cudaSuccess) e = cudaMemcpy(host, cycles, sms * sizeof(long long), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    printf("{\"probe\": \"%s\", \"error\": \"%s\"}\n", p.name, cudaGetErrorString(e));
  } else {
    double mean_cycles = 0;
    for (int i = 0; i < sms; ++i) mean_cycles += host[i];
    mean_cycles /= sms;
    const double instr = double(p.units) * p.iters * p.instr_per_unit_iter;  // per SM
    printf("{\"probe\": \"%s\", \"instr\": \"%s\", \"type\": \"%s\", \"units_per_sm\": %d, "
           "\"instr_per_clk_sm\": %.4f, \"tops\": %.2f, \"ms\": %.4f, \"sm_ghz\": %.3f}\n",
           p.name, p.instr, p.type, p.units, instr / mean_cycles, instr * sms * p.ops_per_instr / (ms * 1e-3) / 1e12,
           ms, mean_cycles / (ms * 1e-3) / 1e9);
  }
  fflush(stdout);
  delete[] host;
  cudaFree(cycles);
  cudaFree(sink);
}

int main() {
  int sms = 0;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    printf("{\"error\": \"no CUDA device\"}\n");
    return 1;
  }
  sms = prop.multiProcessorCount;
  printf("{\"device\": \"%s\", \"sms\": %d, \"capability\": \"%d.%d\"}\n", prop.name, sms, prop.major, prop.minor);
  const int it = 20000;
  const double b1 = 2.0 * 16 * 8 * 256, s8 = 2.0 * 16 * 8 * 32, f16 = 2.0 * 16 * 8 * 16;
  char name[64];
  for (int warps : {4, 8, 16}) {
    snprintf(name, sizeof name, "mma.sync b1 m16n8k256 and.popc, %d warps/SM", warps);
    run({name, "b1", "mma.sync", warps, 32, 0, it, kNacc, b1}, mma_sync_probe<kB1>, sms);
    snprintf(name, sizeof name, "mma.sync s8 m16n8k32, %d warps/SM", warps);
    run({name, "s8", "mma.sync", warps, 32, 0, it, kNacc, s8}, mma_sync_probe<kS8>, sms);
    snprintf(name, sizeof name, "mma.sync f16 m16n8k16 f32 acc, %d warps/SM", warps);
    run({name, "f16", "mma.sync", warps, 32, 0, it, kNacc, f16}, mma_sync_probe<kF16>, sms);
  }
  run({"fused-kernel step (6 ldmatrix + 16 b1 mma), 8 warps/SM", "b1", "fused-step", 8, 32, 256 * 64, it, 16, b1},
      fused_step_probe, sms);
#if defined(WITH_WGMMA)
  const double gb1 = 2.0 * 64 * 128 * 256, gs8 = 2.0 * 64 * 128 * 32, gf16 = 2.0 * 64 * 128 * 16;
  for (int groups : {1, 2, 3}) {
    snprintf(name, sizeof name, "wgmma b1 m64n128k256 and.popc, %d warpgroups/SM", groups);
    run({name, "b1", "wgmma", groups, 128, kWgmmaSmem, it / 4, kWgmmaPerGroup, gb1}, wgmma_probe<kB1>, sms);
    snprintf(name, sizeof name, "wgmma s8 m64n128k32, %d warpgroups/SM", groups);
    run({name, "s8", "wgmma", groups, 128, kWgmmaSmem, it / 4, kWgmmaPerGroup, gs8}, wgmma_probe<kS8>, sms);
    snprintf(name, sizeof name, "wgmma f16 m64n128k16 f32 acc, %d warpgroups/SM", groups);
    run({name, "f16", "wgmma", groups, 128, kWgmmaSmem, it / 4, kWgmmaPerGroup, gf16}, wgmma_probe<kF16>, sms);
  }
#endif
  return 0;
}
