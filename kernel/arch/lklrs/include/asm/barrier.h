/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_BARRIER_H
#define _ASM_LKLRS_BARRIER_H

/*
 * There is one virtual CPU, but host threads (device workers) really run
 * in parallel on other host CPUs and share the virtio rings with us, so the
 * barriers must be real fences, not just compiler barriers.
 */
#define mb()	__atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb()	__atomic_thread_fence(__ATOMIC_ACQUIRE)
#define wmb()	__atomic_thread_fence(__ATOMIC_RELEASE)

#define __smp_mb()	mb()
#define __smp_rmb()	rmb()
#define __smp_wmb()	wmb()

#include <asm-generic/barrier.h>

#endif /* _ASM_LKLRS_BARRIER_H */
