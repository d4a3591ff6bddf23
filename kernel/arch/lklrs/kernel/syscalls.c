// SPDX-License-Identifier: GPL-2.0
/*
 * System calls from host threads.
 *
 * Each host thread that calls in gets a task of its own the first time
 * (a thread of pid 1: same files, cwd and memory, its own credentials),
 * remembered in a host thread-local slot whose destructor ends the task
 * when the thread exits. A call takes the CPU, switches to the caller's
 * task, runs the handler, runs deferred task work (final fput and the
 * like, normally done on return to user space) and lets the CPU go.
 */
#include <linux/errno.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/syscalls.h>
#include <linux/task_work.h>
#include <asm/host.h>
#include <asm/syscalls.h>
#include <asm/unistd.h>

#include "lkl.h"

/* Table entries for calls that need an MMU, signals or a user context. */
#define sys_mmap		sys_ni_syscall
#define sys_rt_sigreturn	sys_ni_syscall
#define sys_clone		sys_ni_syscall

#undef __SYSCALL
#define __SYSCALL(nr, call)	[nr] = (lkl_syscall_fn)(call),
#define __SYSCALL_WITH_COMPAT(nr, native, compat)	__SYSCALL(nr, native)

const lkl_syscall_fn lkl_syscall_table[__NR_syscalls] = {
	[0 ... __NR_syscalls - 1] = (lkl_syscall_fn)sys_ni_syscall,
#include <asm/syscall_table_64.h>
#ifdef CONFIG_FHANDLE
	[__NR_lklrs_statx_handle] = (lkl_syscall_fn)sys_lklrs_statx_handle,
#endif
};

static struct task_struct *host0;	/* pid 1: parent of host tasks */
static struct lkl_tls_key *task_key;
static struct lkl_sem *create_lock;	/* one creation at a time uses host0 */

/* Marks host tasks in copy_thread(); never runs. */
int lkl_host_task_stub(void *unused)
{
	return 0;
}

/* Called with the CPU owned, current == host0. */
static struct task_struct *lkl_new_host_task(void)
{
	struct task_struct *task;
	pid_t pid;

	pid = user_mode_thread(lkl_host_task_stub, NULL,
			       CLONE_VM | CLONE_FS | CLONE_FILES |
			       CLONE_SIGHAND | CLONE_THREAD);
	if (pid < 0)
		return ERR_PTR(pid);

	rcu_read_lock();
	task = find_task_by_pid_ns(pid, &init_pid_ns);
	rcu_read_unlock();
	if (!task)
		return ERR_PTR(-ESRCH);

	snprintf(task->comm, sizeof(task->comm), "host%d", pid);
	return task;
}

/* The calling thread has no task yet: make one, from host0's context. */
static int lkl_enter_new(void)
{
	struct task_struct *task;
	int ret;

	lkl_ops.sem_down(create_lock);
	ret = lkl_cpu_get();
	if (ret) {
		lkl_ops.sem_up(create_lock);
		return ret;
	}

	lkl_switch_to_host_task(host0);
	task = lkl_new_host_task();
	lkl_ops.sem_up(create_lock);
	if (IS_ERR(task)) {
		lkl_cpu_put();
		return PTR_ERR(task);
	}

	lkl_ops.tls_set(task_key, task);
	lkl_switch_to_host_task(task);
	return 0;
}

/**
 * lkl_enter - own the CPU and run as the calling host thread's task
 *
 * Returns 0 (undo with lkl_cpu_put()) or a negative errno.
 */
int lkl_enter(void)
{
	struct task_struct *task;
	int ret;

	if (!task_key)
		return -ENODEV;	/* not booted */

	task = lkl_ops.tls_get(task_key);
	if (!task)
		return lkl_enter_new();

	ret = lkl_cpu_get();
	if (ret)
		return ret;
	lkl_switch_to_host_task(task);
	return 0;
}

long lkl_syscall(long nr, const long *args)
{
	long ret;

	/* Power-off goes through lkl_halt(), which knows how to come back. */
	if (nr < 0 || nr >= __NR_syscalls || nr == __NR_reboot)
		return -ENOSYS;

	ret = lkl_enter();
	if (ret)
		return ret;

	ret = lkl_syscall_table[nr](args[0], args[1], args[2], args[3],
				    args[4], args[5]);
	task_work_run();

	lkl_cpu_put();
	return ret;
}

/*
 * TLS destructor: the host thread is exiting, so its task exits too. The
 * last schedule() in do_exit() switches away and comes back through
 * sched_jb, like any other borrowed schedule().
 */
static void lkl_host_task_exit(void *arg)
{
	struct task_struct *task = arg;

	if (lkl_cpu_get())
		return;
	lkl_switch_to_host_task(task);

	task->thread.flags |= LKL_TASK_SCHED_JB;
	if (!__builtin_setjmp(task->thread.sched_jb))
		do_exit(0);
}

int lkl_syscalls_init(struct task_struct *init)
{
	host0 = init;
	create_lock = lkl_ops.sem_alloc(1);
	task_key = lkl_ops.tls_alloc(lkl_host_task_exit);
	if (!create_lock || !task_key)
		return -ENOMEM;
	return 0;
}
