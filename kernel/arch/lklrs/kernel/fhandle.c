// SPDX-License-Identifier: GPL-2.0
/*
 * statx() of an inode named by a file handle.
 *
 * The daemon keeps only a bounded number of descriptors open and finds the
 * other inodes the host knows by their handles. A stat of such an inode
 * (FUSE GETATTR, the most common request there is) would otherwise cost
 * three calls: open_by_handle_at(O_PATH), statx(AT_EMPTY_PATH) and close().
 * This call decodes the handle to a dentry, asks vfs_getattr() and drops
 * the dentry again: no file, no descriptor, one trip into the kernel. The
 * answer is statx()'s, without STATX_MNT_ID.
 *
 * Decoding and privileges are open_by_handle_at()'s: the caller needs
 * CAP_DAC_READ_SEARCH (a handle skips the path walk, and reconnecting a
 * directory looks names up in its ancestors), any alias is acceptable, and
 * every failure except a lack of memory reads as a stale handle.
 */
#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/exportfs.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/slab.h>
#include <linux/stat.h>
#include <linux/syscalls.h>
#include <linux/uaccess.h>
#include <asm/syscalls.h>

static int lkl_any_alias(void *context, struct dentry *dentry)
{
	return 1;
}

static struct file_handle *lkl_copy_handle(struct file_handle __user *ufh)
{
	struct file_handle header, *handle;

	if (copy_from_user(&header, ufh, sizeof(header)))
		return ERR_PTR(-EFAULT);
	if (header.handle_bytes == 0 || header.handle_bytes > MAX_HANDLE_SZ)
		return ERR_PTR(-EINVAL);

	handle = kmalloc(struct_size(handle, f_handle, header.handle_bytes),
			 GFP_KERNEL);
	if (!handle)
		return ERR_PTR(-ENOMEM);
	*handle = header;
	if (copy_from_user(handle->f_handle, ufh->f_handle,
			   header.handle_bytes)) {
		kfree(handle);
		return ERR_PTR(-EFAULT);
	}
	return handle;
}

/* What statx() reports, field for field (its own copy-out is static). */
static int lkl_copy_statx(const struct kstat *stat, struct statx __user *buf)
{
	struct statx tmp;

	memset(&tmp, 0, sizeof(tmp));
	tmp.stx_mask = stat->result_mask & ~STATX_CHANGE_COOKIE;
	tmp.stx_blksize = stat->blksize;
	tmp.stx_attributes = stat->attributes & ~STATX_ATTR_CHANGE_MONOTONIC;
	tmp.stx_nlink = stat->nlink;
	tmp.stx_uid = from_kuid_munged(current_user_ns(), stat->uid);
	tmp.stx_gid = from_kgid_munged(current_user_ns(), stat->gid);
	tmp.stx_mode = stat->mode;
	tmp.stx_ino = stat->ino;
	tmp.stx_size = stat->size;
	tmp.stx_blocks = stat->blocks;
	tmp.stx_attributes_mask = stat->attributes_mask;
	tmp.stx_atime.tv_sec = stat->atime.tv_sec;
	tmp.stx_atime.tv_nsec = stat->atime.tv_nsec;
	tmp.stx_btime.tv_sec = stat->btime.tv_sec;
	tmp.stx_btime.tv_nsec = stat->btime.tv_nsec;
	tmp.stx_ctime.tv_sec = stat->ctime.tv_sec;
	tmp.stx_ctime.tv_nsec = stat->ctime.tv_nsec;
	tmp.stx_mtime.tv_sec = stat->mtime.tv_sec;
	tmp.stx_mtime.tv_nsec = stat->mtime.tv_nsec;
	tmp.stx_rdev_major = MAJOR(stat->rdev);
	tmp.stx_rdev_minor = MINOR(stat->rdev);
	tmp.stx_dev_major = MAJOR(stat->dev);
	tmp.stx_dev_minor = MINOR(stat->dev);
	tmp.stx_mnt_id = stat->mnt_id;
	tmp.stx_dio_mem_align = stat->dio_mem_align;
	tmp.stx_dio_offset_align = stat->dio_offset_align;
	tmp.stx_subvol = stat->subvol;
	tmp.stx_atomic_write_unit_min = stat->atomic_write_unit_min;
	tmp.stx_atomic_write_unit_max = stat->atomic_write_unit_max;
	tmp.stx_atomic_write_segments_max = stat->atomic_write_segments_max;

	return copy_to_user(buf, &tmp, sizeof(tmp)) ? -EFAULT : 0;
}

/**
 * sys_lklrs_statx_handle - statx() of the inode @ufh names
 * @mountdirfd: any descriptor on the filesystem the handle belongs to
 * @ufh: the handle, as name_to_handle_at() filled it in
 * @flags: AT_STATX_SYNC_AS_STAT, AT_STATX_FORCE_SYNC or AT_STATX_DONT_SYNC
 * @mask: the STATX_* fields wanted
 * @buffer: where the answer goes
 */
SYSCALL_DEFINE5(lklrs_statx_handle, int, mountdirfd,
		struct file_handle __user *, ufh, unsigned int, flags,
		unsigned int, mask, struct statx __user *, buffer)
{
	struct file_handle *handle;
	struct kstat stat;
	struct path path;
	int ret;

	if (flags & ~AT_STATX_SYNC_TYPE ||
	    (flags & AT_STATX_SYNC_TYPE) == AT_STATX_SYNC_TYPE ||
	    mask & STATX__RESERVED)
		return -EINVAL;
	if (!capable(CAP_DAC_READ_SEARCH))
		return -EPERM;

	CLASS(fd, f)(mountdirfd);
	if (fd_empty(f))
		return -EBADF;

	handle = lkl_copy_handle(ufh);
	if (IS_ERR(handle))
		return PTR_ERR(handle);

	path.mnt = fd_file(f)->f_path.mnt;
	path.dentry = exportfs_decode_fh(path.mnt,
					 (struct fid *)handle->f_handle,
					 handle->handle_bytes >> 2,
					 handle->handle_type, lkl_any_alias,
					 NULL);
	kfree(handle);
	if (IS_ERR_OR_NULL(path.dentry))
		return path.dentry == ERR_PTR(-ENOMEM) ? -ENOMEM : -ESTALE;

	/*
	 * What statx() adds to the filesystem's answer, except the mount id:
	 * a handle names an inode, not a place in the mount tree. The
	 * descriptor holds the mount for as long as this call runs.
	 */
	ret = vfs_getattr(&path, &stat, mask & ~STATX_CHANGE_COOKIE, flags);
	if (!ret) {
		if (path.dentry == path.mnt->mnt_root)
			stat.attributes |= STATX_ATTR_MOUNT_ROOT;
		stat.attributes_mask |= STATX_ATTR_MOUNT_ROOT;
		if (S_ISBLK(stat.mode))
			bdev_statx(&path, &stat, mask);
		ret = lkl_copy_statx(&stat, buffer);
	}
	dput(path.dentry);
	return ret;
}
