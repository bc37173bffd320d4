/* Flush-to-zero and denormals-are-zero (x86's MXCSR) for nnfast's compiled work: the
 * thread team sets them for every task (csrc/_pool.h), and the bfloat16 products assume
 * them (csrc/_bf16.h: VDPBF16PS always flushes). Elsewhere these do nothing. */
#ifndef NNFAST_FPMODE_H
#define NNFAST_FPMODE_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NNF_MXCSR_FTZ_DAZ 0x8040u
static unsigned nnf_flush_denormals(void)      /* returns the previous mode */
{
    unsigned before = _mm_getcsr();
    _mm_setcsr(before | NNF_MXCSR_FTZ_DAZ);
    return before;
}
static void nnf_restore_denormals(unsigned before) { _mm_setcsr(before); }
#else
static unsigned nnf_flush_denormals(void) { return 0; }
static void nnf_restore_denormals(unsigned before) { (void)before; }
#endif

#endif
