/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_ATOMIC_H
#define _ASM_LKLRS_ATOMIC_H

#include <linux/types.h>
#include <asm/barrier.h>
#include <asm/cmpxchg.h>

/*
 * atomic_t and atomic64_t on host atomics. Operations that return a value
 * are fully ordered; the generic fallbacks derive every other variant.
 */
#define ATOMIC64_INIT(i)		{ (i) }

#define arch_atomic_read(v)		READ_ONCE((v)->counter)
#define arch_atomic_set(v, i)		WRITE_ONCE(((v)->counter), (i))
#define arch_atomic64_read(v)		READ_ONCE((v)->counter)
#define arch_atomic64_set(v, i)		WRITE_ONCE(((v)->counter), (i))

#define LKL_ATOMIC_VOID_OP(pfx, type, op)				\
static __always_inline void arch_##pfx##_##op(type i, pfx##_t *v)	\
{									\
	__atomic_fetch_##op(&v->counter, i, __ATOMIC_RELAXED);		\
}

#define LKL_ATOMIC_RETURN_OP(pfx, type, op)				\
static __always_inline type arch_##pfx##_##op##_return(type i,		\
						       pfx##_t *v)	\
{									\
	return __atomic_##op##_fetch(&v->counter, i, __ATOMIC_SEQ_CST);\
}

#define LKL_ATOMIC_FETCH_OP(pfx, type, op)				\
static __always_inline type arch_##pfx##_fetch_##op(type i,		\
						    pfx##_t *v)		\
{									\
	return __atomic_fetch_##op(&v->counter, i, __ATOMIC_SEQ_CST);	\
}

#define LKL_ATOMIC_OPS(pfx, type)					\
	LKL_ATOMIC_VOID_OP(pfx, type, add)				\
	LKL_ATOMIC_VOID_OP(pfx, type, sub)				\
	LKL_ATOMIC_VOID_OP(pfx, type, and)				\
	LKL_ATOMIC_VOID_OP(pfx, type, or)				\
	LKL_ATOMIC_VOID_OP(pfx, type, xor)				\
	LKL_ATOMIC_RETURN_OP(pfx, type, add)				\
	LKL_ATOMIC_RETURN_OP(pfx, type, sub)				\
	LKL_ATOMIC_FETCH_OP(pfx, type, add)				\
	LKL_ATOMIC_FETCH_OP(pfx, type, sub)				\
	LKL_ATOMIC_FETCH_OP(pfx, type, and)				\
	LKL_ATOMIC_FETCH_OP(pfx, type, or)				\
	LKL_ATOMIC_FETCH_OP(pfx, type, xor)

LKL_ATOMIC_OPS(atomic, int)
LKL_ATOMIC_OPS(atomic64, s64)

#undef LKL_ATOMIC_OPS
#undef LKL_ATOMIC_FETCH_OP
#undef LKL_ATOMIC_RETURN_OP
#undef LKL_ATOMIC_VOID_OP

#define arch_atomic_add			arch_atomic_add
#define arch_atomic_sub			arch_atomic_sub
#define arch_atomic_and			arch_atomic_and
#define arch_atomic_or			arch_atomic_or
#define arch_atomic_xor			arch_atomic_xor
#define arch_atomic_add_return		arch_atomic_add_return
#define arch_atomic_sub_return		arch_atomic_sub_return
#define arch_atomic_fetch_add		arch_atomic_fetch_add
#define arch_atomic_fetch_sub		arch_atomic_fetch_sub
#define arch_atomic_fetch_and		arch_atomic_fetch_and
#define arch_atomic_fetch_or		arch_atomic_fetch_or
#define arch_atomic_fetch_xor		arch_atomic_fetch_xor

#define arch_atomic64_add		arch_atomic64_add
#define arch_atomic64_sub		arch_atomic64_sub
#define arch_atomic64_and		arch_atomic64_and
#define arch_atomic64_or		arch_atomic64_or
#define arch_atomic64_xor		arch_atomic64_xor
#define arch_atomic64_add_return	arch_atomic64_add_return
#define arch_atomic64_sub_return	arch_atomic64_sub_return
#define arch_atomic64_fetch_add		arch_atomic64_fetch_add
#define arch_atomic64_fetch_sub		arch_atomic64_fetch_sub
#define arch_atomic64_fetch_and		arch_atomic64_fetch_and
#define arch_atomic64_fetch_or		arch_atomic64_fetch_or
#define arch_atomic64_fetch_xor		arch_atomic64_fetch_xor

#endif /* _ASM_LKLRS_ATOMIC_H */
