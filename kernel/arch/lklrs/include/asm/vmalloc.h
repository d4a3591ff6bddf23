/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_VMALLOC_H
#define _ASM_LKLRS_VMALLOC_H
/* No MMU: no vmalloc tuning hooks. */
#endif /* _ASM_LKLRS_VMALLOC_H */
