// SPDX-License-Identifier: GPL-2.0
/*
 * Tasks are host threads.
 *
 * Every kernel thread gets a host thread of its own, which waits on the
 * task's semaphore whenever the task is not running. A context switch posts
 * the next task's semaphore, hands it the CPU and parks the previous one.
 *
 * Host tasks (LKL_TASK_HOST) have no host thread of their own: they run on
 * whatever host thread calls into the kernel for them (one task per calling
 * thread, see syscalls.c). When such a caller leaves the kernel, its task
 * stays "current" until someone else needs the CPU. The next caller then
 * runs schedule() on behalf of that idle task with a resume point
 * (sched_jb): once the scheduler has switched away, __switch_to() jumps
 * back to the resume point instead of parking, so the caller's thread is
 * free to wait for its own task to be scheduled.
 */
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/task_stack.h>
#include <linux/string.h>
#include <asm/host.h>
#include <asm/switch_to.h>

#include "lkl.h"

struct task_struct *lkl_current_task = &init_task;

/*
 * The task that ran before the current one. A woken host thread returns
 * from __switch_to() long after the switch that parked it, so the "prev" on
 * its own stack is stale; finish_task_switch() needs the real one.
 */
struct task_struct *lkl_prev_task;

struct task_struct *__switch_to(struct task_struct *prev,
				struct task_struct *next)
{
	struct thread_struct *prev_thread = &prev->thread;
	struct thread_struct *next_thread = &next->thread;
	lkl_jmp_buf resume;
	bool borrowed = false;

	lkl_current_task = next;
	lkl_prev_task = prev;

	/*
	 * Copy the resume point before next runs: next's thread may borrow
	 * prev again and overwrite it as soon as it owns the CPU.
	 */
	if (prev_thread->flags & LKL_TASK_SCHED_JB) {
		prev_thread->flags &= ~LKL_TASK_SCHED_JB;
		__builtin_memcpy(resume, prev_thread->sched_jb, sizeof(resume));
		borrowed = true;
	}

	lkl_cpu_change_owner(next_thread->host_thread);
	lkl_ops.sem_up(next_thread->sched_sem);

	if (borrowed)
		__builtin_longjmp(resume, 1);

	lkl_ops.sem_down(prev_thread->sched_sem);
	if (prev_thread->flags & LKL_TASK_DEAD)
		__builtin_longjmp(prev_thread->exit_jb, 1);

	return lkl_prev_task;
}

/**
 * lkl_sched_leave - run schedule() for the current host task, then let go
 *
 * The caller owns the CPU and current is a host task that is not running
 * a system call (its thread left the kernel, or it is the caller's own task
 * at the end of one). The task is put to sleep and the scheduler picks
 * another one; the CPU goes with it.
 *
 * Returns 1 once the CPU belongs to another task, 0 if the scheduler found
 * nothing else to run and the caller still owns the CPU.
 */
noinline int lkl_sched_leave(void)
{
	struct task_struct *task = current;

	set_current_state(TASK_UNINTERRUPTIBLE);
	task->thread.flags |= LKL_TASK_SCHED_JB;
	if (__builtin_setjmp(task->thread.sched_jb))
		return 1;

	schedule();

	/* No switch happened: we are still running task. */
	task->thread.flags &= ~LKL_TASK_SCHED_JB;
	__set_current_state(TASK_RUNNING);
	return 0;
}

/**
 * lkl_switch_to_host_task - make the calling host thread run as @task
 *
 * The caller owns the CPU. On return current is @task and the caller still
 * owns the CPU (it may have been handed around in between).
 */
void lkl_switch_to_host_task(struct task_struct *task)
{
	if (current == task)
		return;

	task->thread.host_thread = lkl_ops.thread_self();
	wake_up_process(task);

	if (!lkl_sched_leave()) {
		/* Only possible if task was already current. */
		return;
	}

	lkl_ops.sem_down(task->thread.sched_sem);
	schedule_tail(lkl_prev_task);
}

/*
 * First code of every kernel thread's host thread: wait until the
 * scheduler picks the task, then run its function. Kernel threads end in
 * do_exit(); the last schedule() parks this thread until the task is freed,
 * when arch_release_task_struct() wakes it to return through exit_jb.
 */
static void lkl_thread_bootstrap(void *arg)
{
	struct task_struct *task = arg;
	struct thread_struct *thread = &task->thread;

	lkl_ops.sem_down(thread->sched_sem);
	if (thread->flags & LKL_TASK_DEAD)
		return;
	if (__builtin_setjmp(thread->exit_jb))
		return;

	schedule_tail(lkl_prev_task);
	thread->fn(thread->fn_arg);

	/*
	 * Only a user-mode thread returns here: that is init (pid 1) having
	 * "executed" /init. It becomes the parent of all host tasks, and the
	 * thread waiting in lkl_start_kernel() takes over the CPU.
	 */
	lkl_boot_finished(task);
}

int copy_thread(struct task_struct *p, const struct kernel_clone_args *args)
{
	struct thread_struct *thread = &p->thread;

	/* dup_task_struct() copied the parent's host state: start afresh. */
	memset(thread, 0, sizeof(*thread));

	if (!args->fn)
		return -EINVAL;	/* no user-space fork in a library kernel */

	thread->sched_sem = lkl_ops.sem_alloc(0);
	if (!thread->sched_sem)
		return -ENOMEM;

	if (args->fn == lkl_host_task_stub) {
		thread->flags = LKL_TASK_HOST;
		return 0;
	}

	thread->fn = args->fn;
	thread->fn_arg = args->fn_arg;
	thread->host_handle = lkl_ops.thread_create(lkl_thread_bootstrap, p);
	if (!thread->host_handle) {
		lkl_ops.sem_free(thread->sched_sem);
		thread->sched_sem = NULL;
		return -ENOMEM;
	}
	thread->host_thread = thread->host_handle;
	return 0;
}

void arch_release_task_struct(struct task_struct *tsk)
{
	struct thread_struct *thread = &tsk->thread;

	if (thread->host_handle) {
		/* The host thread is parked in __switch_to(): let it end. */
		thread->flags |= LKL_TASK_DEAD;
		lkl_ops.sem_up(thread->sched_sem);
		lkl_ops.thread_join(thread->host_handle);
		thread->host_handle = 0;
	}
	if (thread->sched_sem) {
		lkl_ops.sem_free(thread->sched_sem);
		thread->sched_sem = NULL;
	}
}

unsigned long __get_wchan(struct task_struct *p)
{
	return 0;
}

void flush_thread(void)
{
}

/* The boot thread runs init_task (the idle task) until the end. */
int lkl_threads_init(void)
{
	init_task.thread.sched_sem = lkl_ops.sem_alloc(0);
	if (!init_task.thread.sched_sem)
		return -ENOMEM;
	init_task.thread.host_thread = lkl_ops.thread_self();
	return 0;
}
