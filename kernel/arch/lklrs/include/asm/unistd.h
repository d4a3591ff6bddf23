/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_UNISTD_H
#define _ASM_LKLRS_UNISTD_H

#include <uapi/asm/unistd.h>

/* stat() and fstatat() with the generic struct stat. */
#define __ARCH_WANT_NEW_STAT

#endif /* _ASM_LKLRS_UNISTD_H */
