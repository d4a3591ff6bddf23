// SPDX-License-Identifier: GPL-2.0
/*
 * The one virtual CPU.
 *
 * Exactly one host thread runs kernel code at a time: the CPU's owner. A
 * host thread becomes the owner by calling in (system call, interrupt from a
 * device or timer thread), or by being handed the CPU in __switch_to() when
 * the scheduler picks the task it runs. This is not a plain mutex: it is
 * taken in one thread and handed to another on every context switch, the
 * owner may take it again (an interrupt raised from inside the kernel), and
 * interrupts raised while someone else owns it must run before it is let go.
 *
 * The fields are protected by a host mutex held only for a few instructions;
 * threads that want the CPU while it is owned wait on a host semaphore.
 */
#include <linux/errno.h>
#include <linux/init.h>
#include <linux/kstrtox.h>
#include <linux/sched.h>
#include <linux/sched/stat.h>
#include <asm/host.h>

#include "lkl.h"

static struct {
	struct lkl_mutex *lock;
	lkl_thread_t owner;		/* 0 when nobody runs kernel code */
	unsigned int count;		/* the owner's nesting depth */
	unsigned int sleepers;		/* threads waiting for the CPU */
	unsigned int spinners;		/* threads polling for it (0 or 1) */
	struct lkl_sem *sleep_sem;
	bool irqs_pending;		/* raised while owned by another thread */
	unsigned long grants;		/* times the CPU got a new owner */
	bool shutdown;			/* halted: nobody may enter any more */
} cpu;

/*
 * How long one waiter polls for the CPU before sleeping, in nanoseconds.
 * Polling wins when the owner lets go within a host wake-up's cost: a few
 * microseconds on bare metal, tens or more in a virtual machine, where four
 * threads reading random 4 KiB blocks through FUSE went from 25k to 55k
 * reads/s when the poll grew from 10 to 50 us (no gain beyond). Only one
 * thread polls at a time, and only while the CPU is contended.
 * "lkl_cpu_spin_ns=N" on the command line changes it; 0 never polls.
 */
static unsigned long lkl_cpu_spin_ns = 50000;

static int __init lkl_cpu_spin_setup(char *str)
{
	return kstrtoul(str, 0, &lkl_cpu_spin_ns) == 0;
}
__setup("lkl_cpu_spin_ns=", lkl_cpu_spin_setup);

static void lkl_cpu_spin_until_free(void)
{
	unsigned long long deadline;
	int i;

	if (!lkl_cpu_spin_ns)
		return;
	deadline = lkl_ops.monotonic_ns() + lkl_cpu_spin_ns;
	do {
		/* Reading the clock costs more than a pause: check it rarely. */
		for (i = 0; i < 64; i++) {
			if (!__atomic_load_n(&cpu.owner, __ATOMIC_RELAXED))
				return;
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#else
			barrier();
#endif
		}
	} while (lkl_ops.monotonic_ns() < deadline);
}

int lkl_cpu_init(void)
{
	cpu.lock = lkl_ops.mutex_alloc();
	cpu.sleep_sem = lkl_ops.sem_alloc(0);
	if (!cpu.lock || !cpu.sleep_sem)
		return -ENOMEM;
	return 0;
}

/**
 * lkl_cpu_get - make the calling host thread the CPU's owner
 *
 * Waits while another thread owns it. Returns 0, or -ESHUTDOWN once the
 * kernel has been halted.
 */
int lkl_cpu_get(void)
{
	lkl_thread_t self = lkl_ops.thread_self();
	bool spun = false;

	lkl_ops.mutex_lock(cpu.lock);
	while (!cpu.shutdown && cpu.owner && cpu.owner != self) {
		/*
		 * Most calls hold the CPU for a microsecond or less: one
		 * waiter at a time spins briefly rather than paying for a host
		 * sleep and wake-up (several microseconds each).
		 */
		if (lkl_cpu_spin_ns && !spun && !cpu.spinners) {
			spun = true;
			cpu.spinners++;
			lkl_ops.mutex_unlock(cpu.lock);
			lkl_cpu_spin_until_free();
			lkl_ops.mutex_lock(cpu.lock);
			cpu.spinners--;
			continue;
		}
		cpu.sleepers++;
		lkl_ops.mutex_unlock(cpu.lock);
		lkl_ops.sem_down(cpu.sleep_sem);
		lkl_ops.mutex_lock(cpu.lock);
		spun = false;	/* woken: worth one more spin */
	}
	if (cpu.shutdown) {
		lkl_ops.mutex_unlock(cpu.lock);
		return -ESHUTDOWN;
	}
	if (cpu.owner != self)
		cpu.grants++;
	cpu.owner = self;
	cpu.count++;
	lkl_ops.mutex_unlock(cpu.lock);
	return 0;
}

/**
 * lkl_cpu_try_get - take the CPU only if nobody else owns it
 *
 * Used to deliver interrupts from host threads. If another thread owns the
 * CPU, the interrupt is left for the owner to run before it lets go.
 * Returns 1 if the caller now owns the CPU, 0 if not, -ESHUTDOWN if halted.
 */
int lkl_cpu_try_get(void)
{
	lkl_thread_t self = lkl_ops.thread_self();
	int ret = 1;

	lkl_ops.mutex_lock(cpu.lock);
	if (cpu.shutdown) {
		ret = -ESHUTDOWN;
	} else if (cpu.owner && cpu.owner != self) {
		cpu.irqs_pending = true;
		/*
		 * The owner runs the interrupt where it enables interrupts
		 * or lets go. Kernel code that waits for another task with
		 * cond_resched() in a loop (shrink_dcache_parent() waiting
		 * for a dentry that another task is killing) would spin
		 * forever if that task waits for this very interrupt (its
		 * disk I/O): nothing else would make it reschedule. A
		 * reschedule request makes its next cond_resched() enter
		 * the scheduler, which enables interrupts and so runs them.
		 * The task cannot be freed meanwhile: switching away from
		 * it takes cpu.lock, which is held here.
		 */
		set_tsk_need_resched(READ_ONCE(lkl_current_task));
		ret = 0;
	} else {
		if (cpu.owner != self)
			cpu.grants++;
		cpu.owner = self;
		cpu.count++;
	}
	lkl_ops.mutex_unlock(cpu.lock);
	return ret;
}

/*
 * Before the outermost owner lets go: run interrupts that other threads
 * raised meanwhile, then let runnable kernel tasks (woken by those
 * interrupts, or by the system call itself) run before the host thread
 * returns to its own code. Returns true with cpu.lock held if the caller
 * still owns the CPU, false if the CPU was handed to another task.
 *
 * single_task_running() must count only tasks that want to run: with the
 * scheduler's delayed dequeue a task that just blocked still counts, and
 * nearly every call would end with a switch to the idle task (two host
 * wake-ups). patches/0004 turns delayed dequeue off.
 */
static bool lkl_cpu_drain(void)
{
	for (;;) {
		lkl_ops.mutex_lock(cpu.lock);
		if (cpu.count != 1 || cpu.shutdown)
			return true;

		if ((cpu.irqs_pending || lkl_irqs_pending()) &&
		    lkl_irqs_enabled()) {
			cpu.irqs_pending = false;
			lkl_ops.mutex_unlock(cpu.lock);
			lkl_run_irqs();
			continue;
		}

		if ((current->thread.flags & LKL_TASK_HOST) &&
		    !single_task_running()) {
			lkl_ops.mutex_unlock(cpu.lock);
			if (lkl_sched_leave())
				return false;
			continue;
		}
		return true;
	}
}

/**
 * lkl_cpu_put - undo one lkl_cpu_get() or successful lkl_cpu_try_get()
 */
void lkl_cpu_put(void)
{
	if (!lkl_cpu_drain())
		return;

	if (--cpu.count == 0) {
		cpu.owner = 0;
		/* A spinner takes it at once; wake a sleeper only if none. */
		if (cpu.sleepers && !cpu.spinners) {
			cpu.sleepers--;
			lkl_ops.sem_up(cpu.sleep_sem);
		}
	}
	lkl_ops.mutex_unlock(cpu.lock);
}

/**
 * lkl_cpu_change_owner - hand the CPU to the host thread of the next task
 *
 * Called by __switch_to() on the current owner's thread; the nesting depth
 * (always 1 inside the scheduler) carries over.
 */
void lkl_cpu_change_owner(lkl_thread_t owner)
{
	lkl_ops.mutex_lock(cpu.lock);
	cpu.owner = owner;
	cpu.grants++;
	lkl_ops.mutex_unlock(cpu.lock);
}

/**
 * lkl_cpu_progress - what the host's watchdog samples
 * @grants: set to the number of times the CPU changed hands so far
 *
 * Returns 1 if a thread runs kernel code now, 0 if the CPU is free (or the
 * kernel is halted). A CPU owned with the same count at samples far apart
 * means kernel code that never sleeps or yields: a lockup.
 */
int lkl_cpu_progress(unsigned long *grants)
{
	int owned;

	lkl_ops.mutex_lock(cpu.lock);
	*grants = cpu.grants;
	owned = cpu.owner && !cpu.shutdown;
	lkl_ops.mutex_unlock(cpu.lock);
	return owned;
}

/**
 * lkl_cpu_shutdown - close the CPU for good
 *
 * The caller keeps owning it; every waiting and future caller gets
 * -ESHUTDOWN, and interrupts raised from host threads are dropped.
 */
void lkl_cpu_shutdown(void)
{
	lkl_ops.mutex_lock(cpu.lock);
	cpu.shutdown = true;
	while (cpu.sleepers) {
		cpu.sleepers--;
		lkl_ops.sem_up(cpu.sleep_sem);
	}
	lkl_ops.mutex_unlock(cpu.lock);
}

bool lkl_cpu_is_shut_down(void)
{
	bool down;

	lkl_ops.mutex_lock(cpu.lock);
	down = cpu.shutdown;
	lkl_ops.mutex_unlock(cpu.lock);
	return down;
}
