// SPDX-License-Identifier: GPL-2.0
/*
 * Virtual interrupts.
 *
 * Host threads (the timer, device workers) raise an interrupt by setting
 * its bit in a pending word. Whoever owns the CPU runs pending interrupts
 * when interrupts are (re-)enabled and before letting the CPU go; if nobody
 * owns it, the raising thread takes the CPU and runs them itself.
 */
#include <linux/hardirq.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/irqchip.h>
#include <asm/irq_regs.h>
#include <asm/host.h>

#include "lkl.h"

static unsigned long irq_flag = ARCH_IRQ_DISABLED;
static unsigned long irqs_raised;	/* one bit per irq, host atomics */
static bool running_irqs;

struct pt_regs lkl_dummy_regs;

bool lkl_irqs_pending(void)
{
	return __atomic_load_n(&irqs_raised, __ATOMIC_ACQUIRE) != 0;
}

bool lkl_irqs_enabled(void)
{
	return irq_flag == ARCH_IRQ_ENABLED;
}

/* Run every raised interrupt; the caller owns the CPU. */
void lkl_run_irqs(void)
{
	struct pt_regs *old_regs;
	unsigned long raised, flags;

	if (running_irqs || in_interrupt())
		return;
	running_irqs = true;
	flags = irq_flag;
	irq_flag = ARCH_IRQ_DISABLED;

	while ((raised = __atomic_exchange_n(&irqs_raised, 0,
					     __ATOMIC_ACQ_REL))) {
		old_regs = set_irq_regs(&lkl_dummy_regs);
		irq_enter();
		while (raised) {
			int irq = __builtin_ctzl(raised);

			raised &= raised - 1;
			generic_handle_irq(irq);
		}
		irq_exit();
		set_irq_regs(old_regs);
	}

	irq_flag = flags;
	running_irqs = false;
}

unsigned long arch_local_save_flags(void)
{
	return irq_flag;
}

void arch_local_irq_restore(unsigned long flags)
{
	if (flags == ARCH_IRQ_ENABLED && irq_flag == ARCH_IRQ_DISABLED &&
	    !in_interrupt() && lkl_irqs_pending()) {
		irq_flag = ARCH_IRQ_ENABLED;
		lkl_run_irqs();
		return;
	}
	irq_flag = flags;
}

/* Spin loops wait for something an interrupt will do: let it happen. */
void lkl_cpu_relax(void)
{
	if (lkl_irqs_enabled() && !in_interrupt() && lkl_irqs_pending())
		lkl_run_irqs();
	barrier();
}

/**
 * lkl_trigger_irq - raise an interrupt from any host thread
 * @irq: 1 .. LKL_NR_IRQS - 1
 *
 * Returns 0, -EINVAL for a bad number or -ESHUTDOWN after halt.
 */
int lkl_trigger_irq(int irq)
{
	int owned;

	if (irq <= 0 || irq >= NR_IRQS)
		return -EINVAL;

	__atomic_fetch_or(&irqs_raised, 1UL << irq, __ATOMIC_ACQ_REL);

	owned = lkl_cpu_try_get();
	if (owned <= 0)
		return owned;	/* the owner runs it, or we are halted */

	if (lkl_irqs_enabled())
		lkl_run_irqs();
	lkl_cpu_put();
	return 0;
}

void __init init_IRQ(void)
{
	int irq;

	for (irq = 1; irq < NR_IRQS; irq++)
		irq_set_chip_and_handler(irq, &dummy_irq_chip,
					 handle_simple_irq);
}
