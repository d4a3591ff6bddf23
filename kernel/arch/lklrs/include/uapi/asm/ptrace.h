/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef _UAPI_ASM_LKLRS_PTRACE_H
#define _UAPI_ASM_LKLRS_PTRACE_H

/* The library kernel never traps from user mode: registers are not kept. */
struct user_pt_regs {
	unsigned long unused;
};

#endif /* _UAPI_ASM_LKLRS_PTRACE_H */
