/* Portability macros for a .cu file that is built both by nvcc and, for the CPU tests, by g++ as C++
   (-x c++ -I$(CUDA_HOME)/include -include tests/cuda/compat.h), where emu.h runs its kernels.

   UTG_LAUNCH(kernel, grid, block, smem, stream, args...)  instead of kernel<<<grid, block, smem, stream>>>.
       A template kernel has a top-level comma: bind it first (auto k = f<128, float>; UTG_LAUNCH(k, ...)).
   UTG_EXTERN_SHARED(T, name)  declares the dynamic shared memory as T *name (one per kernel). */
#ifndef UTG_CUDA_COMPAT_H
#define UTG_CUDA_COMPAT_H

#ifdef __CUDACC__

#define UTG_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define UTG_EXTERN_SHARED(T, name)                                      \
    extern __shared__ __align__(16) unsigned char utg_dyn_smem_##name[]; \
    T *name = reinterpret_cast<T *>(utg_dyn_smem_##name)

#else

#include <cuda_runtime.h> // under a host compiler: the types, and the keywords defined as nothing

#include "emu.h"

// one copy per OS thread, and an OS thread runs one block at a time: one copy per running block
#undef __shared__
#define __shared__ static thread_local
#undef __launch_bounds__
#define __launch_bounds__(...)

// the arguments are evaluated once, at the launch, as under nvcc; every CUDA thread gets copies
#define UTG_LAUNCH(kernel, grid, block, smem, stream, ...)                                         \
    ((void)(stream), utg_emu::launch(#kernel, dim3(grid), dim3(block), (size_t)(smem),             \
                                     [](auto... utg_a) { return [=]() { kernel(utg_a...); }; }(__VA_ARGS__)))
#define UTG_EXTERN_SHARED(T, name) T *name = reinterpret_cast<T *>(utg_emu::dyn_smem())

#endif
#endif
