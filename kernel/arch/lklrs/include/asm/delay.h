/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_LKLRS_DELAY_H
#define _ASM_LKLRS_DELAY_H

/* Busy waits spin on the host's monotonic clock. */
void __ndelay(unsigned long nsecs);
void __udelay(unsigned long usecs);
void __delay(unsigned long loops);

#define ndelay(n)	__ndelay(n)
#define udelay(n)	__udelay(n)

#endif /* _ASM_LKLRS_DELAY_H */
