/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_XOR_H
#define _ASM_LKLRS_XOR_H

#include <asm-generic/xor.h>

/* Skip the boot-time xor benchmark: pick the generic 8-register template. */
#define XOR_SELECT_TEMPLATE(FASTEST)	(&xor_block_8regs)

#endif /* _ASM_LKLRS_XOR_H */
