/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_CURRENT_H
#define _ASM_LKLRS_CURRENT_H

#ifndef __ASSEMBLY__

struct task_struct;

/*
 * Only the host thread that owns the virtual CPU runs kernel code, so one
 * global names the running task; __switch_to() updates it.
 */
extern struct task_struct *lkl_current_task;

static __always_inline struct task_struct *get_current(void)
{
	return lkl_current_task;
}

#define current get_current()

#endif /* __ASSEMBLY__ */

#endif /* _ASM_LKLRS_CURRENT_H */
