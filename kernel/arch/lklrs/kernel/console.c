// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel messages go to the host. The console is "extended": each record
 * carries its level, sequence number and time ("<prefix>,<seq>,<usec>,<flags>;
 * text"), so the host can route it to its own log at the right level.
 */
#include <linux/console.h>
#include <linux/init.h>
#include <asm/host.h>

static void lkl_console_write(struct console *con, const char *str,
			      unsigned int len)
{
	lkl_ops.print(str, len);
}

static struct console lkl_console = {
	.name	= "lkl",
	.write	= lkl_console_write,
	.flags	= CON_PRINTBUFFER | CON_EXTENDED,
	.index	= -1,
};

static int __init lkl_console_init(void)
{
	register_console(&lkl_console);
	return 0;
}
console_initcall(lkl_console_init);
