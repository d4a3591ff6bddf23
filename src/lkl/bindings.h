/* Kernel uapi headers the host side uses; bindgen reads this file. */
#include <asm/host_ops.h>
#include <asm/unistd.h>
#include <asm/errno.h>
#include <asm/statfs.h>
#include <linux/fcntl.h>
#include <linux/stat.h>
#include <linux/time_types.h>
#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/xattr.h>
#include <linux/openat2.h>
#include <linux/mount.h>
#include <linux/limits.h>
#include <linux/reboot.h>
