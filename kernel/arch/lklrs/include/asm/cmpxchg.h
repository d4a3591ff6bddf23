/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_CMPXCHG_H
#define _ASM_LKLRS_CMPXCHG_H

#include <linux/compiler.h>

/* Host atomics: device threads may race with the kernel on shared words. */
#define arch_xchg(ptr, x)						\
	__atomic_exchange_n((ptr), (x), __ATOMIC_SEQ_CST)

#define arch_cmpxchg(ptr, o, n)						\
({									\
	__unqual_scalar_typeof(*(ptr)) __old = (o);			\
	__atomic_compare_exchange_n((ptr), &__old, (n), 0,		\
				    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);\
	__old;								\
})

#define arch_cmpxchg_local	arch_cmpxchg
#define arch_cmpxchg64		arch_cmpxchg
#define arch_cmpxchg64_local	arch_cmpxchg

#endif /* _ASM_LKLRS_CMPXCHG_H */
