// SPDX-License-Identifier: GPL-2.0
/*
 * Idle, string routines and the odds and ends every architecture provides.
 */
#include <linux/cpu.h>
#include <linux/kthread.h>
#include <linux/printk.h>
#include <linux/ptrace.h>
#include <linux/seq_file.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/debug.h>
#include <linux/string.h>
#include <asm/host.h>

#include "lkl.h"

void *memcpy(void *dst, const void *src, size_t n)
{
	return lkl_ops.memcpy(dst, src, n);
}
EXPORT_SYMBOL(memcpy);

void *memset(void *dst, int c, size_t n)
{
	return lkl_ops.memset(dst, c, n);
}
EXPORT_SYMBOL(memset);

void *memmove(void *dst, const void *src, size_t n)
{
	return lkl_ops.memmove(dst, src, n);
}
EXPORT_SYMBOL(memmove);

/*
 * When nothing is runnable the idle task wakes this host task, whose
 * thread then gives the CPU up. The CPU is thus free with a host task as
 * current, which the next caller can schedule away from (see threads.c).
 */
static struct task_struct *idle_host_task;

static int lkl_idle_host_fn(void *unused)
{
	struct task_struct *self = current;

	self->thread.flags |= LKL_TASK_HOST;
	for (;;) {
		lkl_cpu_put();
		lkl_ops.sem_down(self->thread.sched_sem);
		schedule_tail(lkl_prev_task);
	}
	return 0;
}

void arch_cpu_idle_prepare(void)
{
	pid_t pid;

	if (idle_host_task)
		return;

	pid = kernel_thread(lkl_idle_host_fn, NULL, "lkl_idle",
			    CLONE_FS | CLONE_FILES);
	if (pid < 0)
		panic("lkl: cannot create the idle host task: %d\n", pid);
	idle_host_task = find_task_by_pid_ns(pid, &init_pid_ns);
}

void arch_cpu_idle(void)
{
	wake_up_process(idle_host_task);
}

void show_regs(struct pt_regs *regs)
{
	show_regs_print_info(KERN_DEFAULT);
}

void show_stack(struct task_struct *task, unsigned long *sp,
		const char *loglvl)
{
	printk("%s(no stack trace in the library kernel)\n", loglvl);
}

long arch_ptrace(struct task_struct *child, long request, unsigned long addr,
		 unsigned long data)
{
	return ptrace_request(child, request, addr, data);
}

void ptrace_disable(struct task_struct *child)
{
}

static int lkl_cpuinfo_show(struct seq_file *m, void *v)
{
	seq_puts(m, "processor\t: 0\nmodel name\t: lklrs library CPU\n");
	return 0;
}

static void *lkl_cpuinfo_start(struct seq_file *m, loff_t *pos)
{
	return *pos == 0 ? (void *)1 : NULL;
}

static void *lkl_cpuinfo_next(struct seq_file *m, void *v, loff_t *pos)
{
	++*pos;
	return NULL;
}

static void lkl_cpuinfo_stop(struct seq_file *m, void *v)
{
}

const struct seq_operations cpuinfo_op = {
	.start	= lkl_cpuinfo_start,
	.next	= lkl_cpuinfo_next,
	.stop	= lkl_cpuinfo_stop,
	.show	= lkl_cpuinfo_show,
};
