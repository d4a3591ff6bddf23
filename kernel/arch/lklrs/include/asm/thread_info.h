/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_THREAD_INFO_H
#define _ASM_LKLRS_THREAD_INFO_H

#include <asm/page.h>

/*
 * Kernel code runs on the stack of the host thread, so the stack the
 * generic code allocates per task is never used; keep it one page.
 */
#define THREAD_SIZE_ORDER	0
#define THREAD_SIZE		(PAGE_SIZE << THREAD_SIZE_ORDER)

#ifndef __ASSEMBLY__

struct thread_info {
	unsigned long flags;
	int preempt_count;
};

#define INIT_THREAD_INFO(tsk)				\
{							\
	.flags		= 0,				\
	.preempt_count	= INIT_PREEMPT_COUNT,		\
}

#endif /* __ASSEMBLY__ */

#define TIF_SYSCALL_TRACE	0
#define TIF_NOTIFY_RESUME	1
#define TIF_SIGPENDING		2
#define TIF_NEED_RESCHED	3
#define TIF_RESTORE_SIGMASK	4
#define TIF_MEMDIE		5
#define TIF_NOTIFY_SIGNAL	6

#define _TIF_SYSCALL_TRACE	(1 << TIF_SYSCALL_TRACE)
#define _TIF_NOTIFY_RESUME	(1 << TIF_NOTIFY_RESUME)
#define _TIF_SIGPENDING		(1 << TIF_SIGPENDING)
#define _TIF_NEED_RESCHED	(1 << TIF_NEED_RESCHED)
#define _TIF_RESTORE_SIGMASK	(1 << TIF_RESTORE_SIGMASK)
#define _TIF_MEMDIE		(1 << TIF_MEMDIE)
#define _TIF_NOTIFY_SIGNAL	(1 << TIF_NOTIFY_SIGNAL)

#endif /* _ASM_LKLRS_THREAD_INFO_H */
