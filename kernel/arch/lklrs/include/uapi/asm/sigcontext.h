/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef _UAPI_ASM_LKLRS_SIGCONTEXT_H
#define _UAPI_ASM_LKLRS_SIGCONTEXT_H

#include <asm/ptrace.h>

/* Signals are never delivered to host code; kept for the uapi layout. */
struct sigcontext {
	struct user_pt_regs regs;
};

#endif /* _UAPI_ASM_LKLRS_SIGCONTEXT_H */
