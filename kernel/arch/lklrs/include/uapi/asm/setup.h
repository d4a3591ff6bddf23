/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef _UAPI_ASM_LKLRS_SETUP_H
#define _UAPI_ASM_LKLRS_SETUP_H

/* Hosts append one virtio_mmio.device= per disk: leave room for many. */
#define COMMAND_LINE_SIZE	4096

#endif /* _UAPI_ASM_LKLRS_SETUP_H */
