// SPDX-License-Identifier: GPL-2.0
/*
 * Boot and power-off.
 *
 * lkl_start_kernel() starts a host thread that runs start_kernel() and then
 * stays the idle task. Init (pid 1) runs every initcall and then "executes"
 * /init through a private binary format that does nothing: that keeps the
 * rootfs as / (no root device needed) and leaves pid 1 as a clean parent
 * for the tasks of host threads. Its host thread then hands the CPU to the
 * thread waiting in lkl_start_kernel() and ends.
 */
#include <linux/binfmts.h>
#include <linux/init.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/init_syscalls.h>
#include <linux/kdev_t.h>
#include <linux/module.h>
#include <linux/panic_notifier.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/start_kernel.h>
#include <linux/string.h>
#include <linux/task_work.h>
#include <asm/host.h>
#include <asm/setup.h>

#include "lkl.h"

struct lkl_host_ops lkl_ops;
unsigned long lkl_mem_size;

static char lkl_cmdline[COMMAND_LINE_SIZE];
static struct lkl_sem *boot_done;
static lkl_thread_t boot_caller;
static lkl_thread_t boot_thread;

/* Halt: where lkl_halt() resumes once the kernel has powered off. */
static lkl_jmp_buf halt_jb;
static bool halting;

void __init setup_arch(char **cmdline_p)
{
	strscpy(boot_command_line, lkl_cmdline, COMMAND_LINE_SIZE);
	*cmdline_p = lkl_cmdline;
	parse_early_param();
	lkl_bootmem_init(lkl_mem_size);
}

static void __ref lkl_boot_thread(void *unused)
{
	if (lkl_threads_init() || lkl_cpu_get())
		lkl_ops.panic("lkl: cannot set up the boot thread");
	start_kernel();
}

/* pid 1 has run every initcall; called on its host thread, which then ends. */
void lkl_boot_finished(struct task_struct *init)
{
	init->thread.flags |= LKL_TASK_HOST;
	init->thread.host_thread = 0;
	lkl_cpu_change_owner(boot_caller);
	lkl_ops.sem_up(boot_done);
}

int lkl_start_kernel(const struct lkl_host_ops *ops, unsigned long mem_size,
		     const char *cmdline)
{
	struct task_struct *init;
	int ret;

	/* Copying the table may itself call memcpy(), which uses these. */
	lkl_ops.memcpy = ops->memcpy;
	lkl_ops.memset = ops->memset;
	lkl_ops.memmove = ops->memmove;
	lkl_ops = *ops;

	lkl_mem_size = mem_size;
	if (strscpy(lkl_cmdline, cmdline, sizeof(lkl_cmdline)) < 0)
		return -E2BIG;

	boot_done = lkl_ops.sem_alloc(0);
	if (!boot_done)
		return -ENOMEM;
	ret = lkl_cpu_init();
	if (ret)
		return ret;

	boot_caller = lkl_ops.thread_self();
	boot_thread = lkl_ops.thread_create(lkl_boot_thread, NULL);
	if (!boot_thread)
		return -ENOMEM;

	lkl_ops.sem_down(boot_done);

	/* We own the CPU now; wait for init's host thread to be gone. */
	init = find_task_by_pid_ns(1, &init_pid_ns);
	lkl_ops.thread_join(init->thread.host_handle);
	init->thread.host_handle = 0;

	ret = lkl_syscalls_init(init);
	lkl_cpu_put();
	return ret;
}

static int lkl_load_init(struct linux_binprm *bprm)
{
	if (task_pid_nr(current) != 1 || strcmp(bprm->filename, "/init"))
		return -ENOEXEC;
	return 0;
}

static struct linux_binfmt lkl_init_binfmt = {
	.module		= THIS_MODULE,
	.load_binary	= lkl_load_init,
};

/*
 * There is no terminal (TTY=n): point /dev/console at /dev/null so that
 * init's standard descriptors open quietly instead of logging an error.
 */
static void __init lkl_console_to_null(void)
{
	init_unlink("/dev/console");
	if (init_mknod("/dev/null", S_IFCHR | 0666, new_encode_dev(MKDEV(1, 3))) ||
	    init_symlink("/dev/null", "/dev/console"))
		pr_warn("lkl: cannot point /dev/console at /dev/null\n");
}

static int __init lkl_init_setup(void)
{
	struct file *file;

	lkl_console_to_null();

	file = filp_open("/init", O_CREAT | O_EXCL | O_WRONLY, 0700);
	if (IS_ERR(file))
		return PTR_ERR(file);
	fput(file);
	/* Close it now, not on a return to user space that never comes. */
	task_work_run();

	register_binfmt(&lkl_init_binfmt);
	return 0;
}
late_initcall(lkl_init_setup);

static void lkl_machine_stop(void)
{
	lkl_cpu_shutdown();
	lkl_time_shutdown();
	if (halting)
		__builtin_longjmp(halt_jb, 1);
	lkl_ops.panic("lkl: the kernel stopped itself");
}

void machine_halt(void)
{
	lkl_machine_stop();
}

void machine_power_off(void)
{
	lkl_machine_stop();
}

void machine_restart(char *cmd)
{
	lkl_machine_stop();
}

/**
 * lkl_halt - power the kernel off for good
 *
 * Runs the kernel's own power-off path (shutdown notifiers, device
 * shutdown) on the caller's task. Afterwards the caller keeps the CPU
 * forever: every other caller gets -ESHUTDOWN. Hosts sync and unmount
 * before this.
 */
int lkl_halt(void)
{
	int ret;

	ret = lkl_enter();
	if (ret)
		return ret;

	halting = true;
	if (!__builtin_setjmp(halt_jb))
		kernel_power_off();
	return 0;
}

static int lkl_panic_notify(struct notifier_block *nb, unsigned long event,
			    void *msg)
{
	lkl_ops.panic(msg);
	return NOTIFY_DONE;
}

static struct notifier_block lkl_panic_nb = {
	.notifier_call = lkl_panic_notify,
};

static int __init lkl_panic_setup(void)
{
	atomic_notifier_chain_register(&panic_notifier_list, &lkl_panic_nb);
	return 0;
}
early_initcall(lkl_panic_setup);
