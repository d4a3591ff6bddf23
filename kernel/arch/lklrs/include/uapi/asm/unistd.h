/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#include <asm/unistd_64.h>

/*
 * Calls only this kernel has, numbered from 244: the generic table leaves
 * 244-259 to architectures (__NR_arch_specific_syscall).
 */
#define __NR_lklrs_statx_handle 244
