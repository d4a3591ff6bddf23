/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_HOST_H
#define _ASM_LKLRS_HOST_H

#include <uapi/asm/host_ops.h>

/* The host's services, copied from the table given to lkl_start_kernel(). */
extern struct lkl_host_ops lkl_ops;

#endif /* _ASM_LKLRS_HOST_H */
