/* SPDX-License-Identifier: GPL-2.0 */
/* Interfaces shared by the files of the lklrs port. */
#ifndef _LKLRS_KERNEL_LKL_H
#define _LKLRS_KERNEL_LKL_H

#include <linux/types.h>
#include <asm/host.h>

struct task_struct;

/* cpu.c: the single virtual CPU, owned by one host thread at a time */
int lkl_cpu_init(void);
int lkl_cpu_get(void);
int lkl_cpu_try_get(void);
void lkl_cpu_put(void);
void lkl_cpu_change_owner(lkl_thread_t owner);
void lkl_cpu_shutdown(void);
bool lkl_cpu_is_shut_down(void);

/* threads.c: tasks as host threads */
extern struct task_struct *lkl_prev_task;
int lkl_sched_leave(void);
void lkl_switch_to_host_task(struct task_struct *task);
int lkl_threads_init(void);

/* irq.c */
void lkl_run_irqs(void);
bool lkl_irqs_pending(void);
bool lkl_irqs_enabled(void);

/* syscalls.c */
int lkl_host_task_stub(void *unused);
int lkl_syscalls_init(struct task_struct *init);
int lkl_enter(void);

/* setup.c */
void lkl_boot_finished(struct task_struct *init);

/* time.c */
void lkl_time_shutdown(void);

/* mem.c */
void lkl_bootmem_init(unsigned long mem_size);

extern unsigned long lkl_mem_size;

#endif /* _LKLRS_KERNEL_LKL_H */
