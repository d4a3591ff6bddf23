/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_PROCESSOR_H
#define _ASM_LKLRS_PROCESSOR_H

#ifndef __ASSEMBLY__

#include <asm/host.h>

/* A resume point for __builtin_setjmp/__builtin_longjmp: five words. */
typedef void *lkl_jmp_buf[5];

/* thread_struct.flags */
#define LKL_TASK_HOST		0x1	/* runs on whichever host thread calls in */
#define LKL_TASK_SCHED_JB	0x2	/* leave schedule() through sched_jb */
#define LKL_TASK_DEAD		0x4	/* host thread must end when it wakes */

/**
 * struct thread_struct - the host side of a task
 * @sched_sem: the task's host thread waits here while the task is not running
 * @host_thread: host thread that runs the task when it is scheduled
 * @flags: LKL_TASK_*
 * @sched_jb: where a host thread that merely borrowed this task resumes
 *	once schedule() has switched away from it
 * @exit_jb: where a kernel thread's host thread returns to end itself
 * @host_handle: handle from thread_create() (equal to the thread's
 *	thread_self()), used to join it; 0 for host tasks
 * @fn: kernel thread function
 * @fn_arg: its argument
 */
struct thread_struct {
	struct lkl_sem *sched_sem;
	lkl_thread_t host_thread;
	unsigned long flags;
	lkl_jmp_buf sched_jb;
	lkl_jmp_buf exit_jb;
	lkl_thread_t host_handle;
	int (*fn)(void *arg);
	void *fn_arg;
};

#define INIT_THREAD { }

void lkl_cpu_relax(void);

static inline void cpu_relax(void)
{
	lkl_cpu_relax();
}

/* Host addresses are passed to syscalls as "user" pointers: all are valid. */
#define TASK_SIZE		(~0UL)
#define TASK_UNMAPPED_BASE	0
#define STACK_TOP		TASK_SIZE
#define STACK_TOP_MAX		STACK_TOP

#define KSTK_EIP(tsk)		(0)
#define KSTK_ESP(tsk)		(0)

struct task_struct;
unsigned long __get_wchan(struct task_struct *p);

#endif /* __ASSEMBLY__ */

#endif /* _ASM_LKLRS_PROCESSOR_H */
