// Per-machine code paths for the CPU kernels: a function marked ODIN_TARGETS is compiled for AVX2
// and for baseline x86-64, and the loader picks one for the machine it runs on (the build cache
// may be shared by machines of different kinds, so no -march=native). Floating-point results do
// not depend on the pick: no fma contraction (-ffp-contract=off) and no reassociation.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ODIN_TARGETS __attribute__((target_clones("avx2", "default")))
#else
#define ODIN_TARGETS
#endif
