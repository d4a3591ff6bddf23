/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_IRQFLAGS_H
#define _ASM_LKLRS_IRQFLAGS_H

/*
 * Interrupts are virtual: a flag says whether they may run. Re-enabling
 * them runs the interrupts that host threads raised in the meantime.
 */
#define ARCH_IRQ_ENABLED	1
#define ARCH_IRQ_DISABLED	0

unsigned long arch_local_save_flags(void);
void arch_local_irq_restore(unsigned long flags);

#define arch_local_save_flags arch_local_save_flags
#define arch_local_irq_restore arch_local_irq_restore

#include <asm-generic/irqflags.h>

#endif /* _ASM_LKLRS_IRQFLAGS_H */
