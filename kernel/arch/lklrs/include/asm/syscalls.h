/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_SYSCALLS_H
#define _ASM_LKLRS_SYSCALLS_H

#include <asm-generic/syscalls.h>

typedef long (*lkl_syscall_fn)(long, long, long, long, long, long);
extern const lkl_syscall_fn lkl_syscall_table[];

struct file_handle;
struct statx;
asmlinkage long sys_lklrs_statx_handle(int mountdirfd,
				       struct file_handle __user *ufh,
				       unsigned int flags, unsigned int mask,
				       struct statx __user *buffer);

#endif /* _ASM_LKLRS_SYSCALLS_H */
