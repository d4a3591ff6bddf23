/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_STRING_H
#define _ASM_LKLRS_STRING_H

#include <linux/types.h>

/* Page-cache copies dominate file I/O: use the host's optimised routines. */
#define __HAVE_ARCH_MEMCPY
extern void *memcpy(void *dst, const void *src, __kernel_size_t n);

#define __HAVE_ARCH_MEMSET
extern void *memset(void *dst, int c, __kernel_size_t n);

#define __HAVE_ARCH_MEMMOVE
extern void *memmove(void *dst, const void *src, __kernel_size_t n);

#endif /* _ASM_LKLRS_STRING_H */
