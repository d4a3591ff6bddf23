/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_IRQ_H
#define _ASM_LKLRS_IRQ_H

#include <uapi/asm/host_ops.h>

#define NR_IRQS		LKL_NR_IRQS

#include <asm-generic/irq.h>

#endif /* _ASM_LKLRS_IRQ_H */
