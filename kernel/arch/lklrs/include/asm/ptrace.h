/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_PTRACE_H
#define _ASM_LKLRS_PTRACE_H

#include <uapi/asm/ptrace.h>

/*
 * Nothing ever traps: interrupts and system calls are plain function calls
 * on host threads, so there are no saved registers to describe.
 */
struct pt_regs {
	unsigned long unused;
};

#define user_mode(regs)			(0)
#define kernel_mode(regs)		(1)
#define instruction_pointer(regs)	(0)
#define profile_pc(regs)		(0)
#define user_stack_pointer(regs)	(0)
#define current_user_stack_pointer()	(0)

struct task_struct;
extern struct pt_regs lkl_dummy_regs;
#define task_pt_regs(t)			(&lkl_dummy_regs)
#define current_pt_regs()		(&lkl_dummy_regs)

#endif /* _ASM_LKLRS_PTRACE_H */
