//! Inodes the host kernel knows about (FUSE node ids), each tied to a kernel inode.
//!
//! A node is found again through its *file handle* (`name_to_handle_at`), so the kernel does
//! not have to keep every inode the host has looked up in its small RAM: only a bounded
//! number of `O_PATH` descriptors stay open ([`FD_CACHE_MAX`]), the rest are reopened by
//! handle when used, or only stat'ed by handle ([`sys::statx_by_handle`], one kernel call)
//! when that is all a request needs. Filesystems that cannot export handles (exFAT, FAT
//! without `nfs=`) keep one pinned `O_PATH` descriptor per known node instead, like virtiofsd.
//!
//! Node ids are the kernel's inode numbers, so `stat` shows the image's real numbers (fuser
//! uses the node id as `st_ino`). The root is node 1 as FUSE requires; a number already
//! taken by another live inode (btrfs subvolumes share numbers, or a number reused while the
//! host still holds the old node) gets a synthetic id from [`SYNTHETIC_BASE`] up instead.

use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::{creds, OpenFile};
use crate::lkl::abi::{FileHandle, Statx};
use crate::lkl::{bindings as b, sys, Errno, KernelFd};

/// FUSE's root node id.
pub const ROOT_ID: u64 = 1;
/// First synthetic node id (far above any inode number a filesystem hands out).
pub const SYNTHETIC_BASE: u64 = 1 << 56;
/// Open `O_PATH` descriptors kept for handle-backed nodes.
pub const FD_CACHE_MAX: usize = 1024;
/// Nodes' own open files kept (see [`InodeTable::node_file`]).
pub const NODE_FILES_MAX: usize = 1024;

/// `statx` mask the daemon asks for.
pub const STATX_MASK: u32 = b::STATX_BASIC_STATS | b::STATX_BTIME;

/// One node.
#[derive(Debug)]
pub struct Inode {
    /// FUSE node id.
    pub id: u64,
    /// (device, inode number) inside the kernel.
    key: (u64, u64),
    /// How to find it again, when the filesystem can say.
    handle: Option<FileHandle>,
    /// A descriptor held for the node's whole life (root, or no handle support).
    pinned: Option<Arc<KernelFd>>,
    /// A cached descriptor for handle-backed nodes.
    cached: Mutex<Option<Arc<KernelFd>>>,
    /// A descriptor held since a name of the node was removed while the host knew it (see
    /// [`InodeTable::removing`]), until the host forgets it.
    kept: Mutex<Option<Arc<KernelFd>>>,
    /// The node's own open file and whether it was opened for writing (see
    /// [`InodeTable::node_file`]).
    file: Mutex<Option<(Arc<OpenFile>, bool)>>,
    /// FUSE lookup count.
    lookups: AtomicU64,
    /// `S_IFMT` bits (a node never changes type).
    pub file_type: u32,
}

impl Inode {
    /// The inode's generation as the filesystem keeps it (0 when the handle does not say).
    pub fn generation(&self) -> u64 {
        self.handle.as_ref().map_or(0, handle_generation)
    }

    /// Whether the node is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type == b::S_IFLNK
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

/// All known nodes.
pub struct InodeTable {
    maps: RwLock<Maps>,
    next_synthetic: AtomicU64,
    /// The mount's root: `open_by_handle_at` needs a descriptor on the filesystem.
    mount_fd: Arc<KernelFd>,
    /// Handle-backed nodes with a cached descriptor, oldest first.
    fd_cache: Mutex<VecDeque<Weak<Inode>>>,
    /// Nodes holding their own open file, oldest first.
    file_cache: Mutex<VecDeque<Weak<Inode>>>,
}

/// What a lookup found.
pub struct Found {
    /// The node (its lookup count already raised by one).
    pub inode: Arc<Inode>,
    /// Its attributes.
    pub stat: Statx,
}

fn key_of(st: &Statx) -> (u64, u64) {
    (
        (u64::from(st.dev_major) << 32) | u64::from(st.dev_minor),
        st.ino,
    )
}

impl InodeTable {
    /// A table whose root (node 1) is the directory `root` inside the kernel.
    pub fn new(root: &CStr) -> Result<InodeTable, Errno> {
        // Not O_PATH: open_by_handle_at wants a real descriptor on the filesystem.
        let flags = (b::O_RDONLY | b::O_DIRECTORY | b::O_CLOEXEC) as i32;
        let fd = Arc::new(sys::openat(crate::lkl::CWD, root, flags, 0)?);
        let st = stat_fd(&fd)?;
        let root = Arc::new(Inode {
            id: ROOT_ID,
            key: key_of(&st),
            handle: None,
            pinned: Some(fd.clone()),
            cached: Mutex::new(None),
            kept: Mutex::new(None),
            file: Mutex::new(None),
            lookups: AtomicU64::new(1),
            file_type: u32::from(st.mode) & b::S_IFMT,
        });
        let mut maps = Maps::default();
        maps.by_key.insert(root.key, ROOT_ID);
        maps.by_id.insert(ROOT_ID, root);
        Ok(InodeTable {
            maps: RwLock::new(maps),
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            mount_fd: fd,
            fd_cache: Mutex::new(VecDeque::new()),
            file_cache: Mutex::new(VecDeque::new()),
        })
    }

    /// The root directory's descriptor.
    pub fn root_fd(&self) -> &Arc<KernelFd> {
        &self.mount_fd
    }

    /// The node with id `id`; `ESTALE` if the host names one it was told to forget.
    pub fn get(&self, id: u64) -> Result<Arc<Inode>, Errno> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_id.get(&id).cloned().ok_or(Errno::ESTALE)
    }

    /// An `O_PATH` descriptor for `inode`, reopened from its handle if needed.
    pub fn fd(&self, inode: &Arc<Inode>) -> Result<Arc<KernelFd>, Errno> {
        if let Some(fd) = held_fd(inode) {
            return Ok(fd);
        }
        let handle = inode.handle.as_ref().ok_or(Errno::ESTALE)?;
        let flags = (b::O_PATH | b::O_NOFOLLOW | b::O_CLOEXEC) as i32;
        let fd = Arc::new(creds::as_daemon(|| {
            sys::open_by_handle_at(&*self.mount_fd, handle, flags)
        })?);
        self.cache_fd(inode, fd.clone());
        Ok(fd)
    }

    /// The attributes of `inode`. A handle-backed node whose descriptor has left the cache is
    /// stat'ed by handle in one kernel call, without reopening it (a stat is no reason to
    /// push another node's descriptor out of the cache).
    pub fn stat(&self, inode: &Arc<Inode>) -> Result<Statx, Errno> {
        match (held_fd(inode), &inode.handle) {
            (Some(fd), _) => stat_fd(&fd),
            (None, Some(handle)) => self.stat_by_handle(handle, STATX_MASK),
            (None, None) => Err(Errno::ESTALE),
        }
    }

    /// Whether `inode` is live now: it holds a descriptor, or its handle still names it.
    fn alive(&self, inode: &Arc<Inode>) -> bool {
        held_fd(inode).is_some()
            || inode.handle.as_ref().is_some_and(|handle| {
                self.stat_by_handle(handle, 0)
                    .is_ok_and(|st| key_of(&st) == inode.key)
            })
    }

    /// `statx` by handle, with the daemon's own ids as for reopening (the call needs
    /// `CAP_DAC_READ_SEARCH`).
    fn stat_by_handle(&self, handle: &FileHandle, mask: u32) -> Result<Statx, Errno> {
        creds::as_daemon(|| sys::statx_by_handle(&*self.mount_fd, handle, mask))
    }

    fn cache_fd(&self, inode: &Arc<Inode>, fd: Arc<KernelFd>) {
        {
            let mut cached = lock(&inode.cached);
            if cached.is_some() {
                return;
            }
            *cached = Some(fd);
        }
        remember(&self.fd_cache, inode, FD_CACHE_MAX, |old| {
            lock(&old.cached).take();
        });
    }

    /// Looks `name` up in directory `parent` and counts one more host reference to it.
    pub fn lookup(&self, parent: &Arc<Inode>, name: &CStr) -> Result<Found, Errno> {
        let dir = self.fd(parent)?;
        let flags = (b::O_PATH | b::O_NOFOLLOW | b::O_CLOEXEC) as i32;
        let fd = sys::openat(&*dir, name, flags, 0)?;
        let stat = stat_fd(&fd)?;
        let handle = match sys::name_to_handle_at(&fd, c"", b::AT_EMPTY_PATH as i32) {
            Ok((handle, _mount_id)) => Some(handle),
            Err(_) => None,
        };
        Ok(Found {
            inode: self.insert(fd, &stat, handle),
            stat,
        })
    }

    /// Like [`InodeTable::lookup`] for a directory entry whose inode number `ino` came with
    /// it (`getdents64`): when a node with that number is already known, first checks that
    /// the name still leads to it, which takes one `statx` (and a reopen by handle if its
    /// descriptor is no longer cached) instead of an open, a `statx`, a handle and a close.
    /// Listing a directory again, or removing a tree the host has seen, is mostly that.
    pub fn lookup_listed(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
        ino: u64,
    ) -> Result<Found, Errno> {
        let known = {
            let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
            maps.by_id.get(&ino).cloned()
        };
        if let Some(known) = known {
            if let Some(found) = self.revalidate(parent, name, &known)? {
                return Ok(found);
            }
        }
        self.lookup(parent, name)
    }

    /// `Some` if `name` in `parent` is still the live inode behind `known` (its lookup count
    /// then raised by one), `None` if that cannot be shown cheaply.
    fn revalidate(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
        known: &Arc<Inode>,
    ) -> Result<Option<Found>, Errno> {
        let dir = self.fd(parent)?;
        let stat = sys::statx(&*dir, name, b::AT_SYMLINK_NOFOLLOW as i32, STATX_MASK)?;
        if key_of(&stat) != known.key {
            return Ok(None);
        }
        // The number was `known`'s at the statx only if `known` was alive then: a live
        // inode keeps its number to itself. A descriptor on it, or its handle still naming
        // an inode now, shows that it is (a handle fails once the inode is gone, or its
        // number was reused).
        if !self.alive(known) {
            return Ok(None);
        }
        let maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        match maps.by_id.get(&known.id) {
            Some(current) if Arc::ptr_eq(current, known) => {
                known.lookups.fetch_add(1, Ordering::Relaxed);
                Ok(Some(Found {
                    inode: known.clone(),
                    stat,
                }))
            }
            // Forgotten meanwhile: register it again the full way.
            _ => Ok(None),
        }
    }

    fn insert(&self, fd: KernelFd, stat: &Statx, handle: Option<FileHandle>) -> Arc<Inode> {
        let key = key_of(stat);
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
            // The same inode again, unless its number was reused for a new one (then the
            // handle, which carries a generation, differs).
            if existing.handle == handle {
                existing.lookups.fetch_add(1, Ordering::Relaxed);
                return existing.clone();
            }
        }
        let id = if stat.ino != ROOT_ID && !maps.by_id.contains_key(&stat.ino) {
            stat.ino
        } else {
            self.next_synthetic.fetch_add(1, Ordering::Relaxed)
        };
        let fd = Arc::new(fd);
        let pinned = handle.is_none().then(|| fd.clone());
        let inode = Arc::new(Inode {
            id,
            key,
            handle,
            pinned,
            cached: Mutex::new(None),
            kept: Mutex::new(None),
            file: Mutex::new(None),
            lookups: AtomicU64::new(1),
            file_type: u32::from(stat.mode) & b::S_IFMT,
        });
        maps.by_key.insert(key, id);
        maps.by_id.insert(id, inode.clone());
        drop(maps);
        if inode.pinned.is_none() {
            self.cache_fd(&inode, fd);
        }
        inode
    }

    /// The node's own open file, for the reads and writes the host sends without an open
    /// of its own (it opens files without asking, see `KernelFs`'s `open`). It is opened
    /// with `open` (given whether it must be writable) when the node has none, or only a
    /// read-only one and `write` is asked for. At most [`NODE_FILES_MAX`] nodes keep theirs;
    /// the others open it again when used.
    pub(super) fn node_file(
        &self,
        inode: &Arc<Inode>,
        write: bool,
        open: impl FnOnce(bool) -> Result<OpenFile, Errno>,
    ) -> Result<Arc<OpenFile>, Errno> {
        let usable = |slot: &Option<(Arc<OpenFile>, bool)>| match slot {
            Some((file, writable)) if *writable || !write => Some(file.clone()),
            _ => None,
        };
        if let Some(file) = usable(&lock(&inode.file)) {
            return Ok(file);
        }
        let file = Arc::new(open(write)?);
        let mut slot = lock(&inode.file);
        if let Some(theirs) = usable(&slot) {
            return Ok(theirs); // another request was faster
        }
        let first = slot.is_none();
        *slot = Some((file.clone(), write));
        drop(slot);
        if first {
            remember(&self.file_cache, inode, NODE_FILES_MAX, |old| {
                lock(&old.file).take();
            });
        }
        Ok(file)
    }

    /// Closes the node's own open file (its attributes changed, see `KernelFs`'s `ioctl`),
    /// to be opened again under the new rules when next used.
    pub(super) fn reopen_node_file(&self, inode: &Inode) {
        lock(&inode.file).take();
    }

    /// Called before `name` in `dir` is removed or replaced: if it names a regular file the
    /// host knows, the host may hold it open without our knowing (see `KernelFs`'s `open`),
    /// so the node holds a descriptor until the host forgets it. Without one the kernel
    /// would free the inode with its last name, and the host's reads and writes would find
    /// nothing: a handle does not find an inode without names.
    pub(super) fn removing(&self, dir: &KernelFd, name: &CStr) {
        let flags = b::AT_SYMLINK_NOFOLLOW as i32;
        // On failure the removal itself reports what is wrong with the name.
        let Ok(stat) = sys::statx(dir, name, flags, b::STATX_TYPE | b::STATX_INO) else {
            return;
        };
        if u32::from(stat.mode) & b::S_IFMT != b::S_IFREG {
            return;
        }
        let node = {
            let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
            match maps
                .by_key
                .get(&key_of(&stat))
                .and_then(|id| maps.by_id.get(id))
            {
                Some(node) => node.clone(),
                None => return,
            }
        };
        if node.pinned.is_some() || lock(&node.kept).is_some() {
            return;
        }
        // If the node cannot be reached now (its number reused behind the host's back, say),
        // the removal still goes ahead.
        if let Ok(fd) = self.fd(&node) {
            *lock(&node.kept) = Some(fd);
        }
    }

    /// The host dropped `n` references to node `id`; it goes once none are left.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let Some(inode) = maps.by_id.get(&id) else {
            return;
        };
        let left = inode.lookups.load(Ordering::Relaxed).saturating_sub(n);
        inode.lookups.store(left, Ordering::Relaxed);
        if left > 0 {
            return;
        }
        let key = inode.key;
        let gone = maps.by_id.remove(&id);
        if maps.by_key.get(&key) == Some(&id) {
            maps.by_key.remove(&key);
        }
        drop(maps);
        // The last reference closes the node's descriptor, and the kernel may then free the
        // inode (all the blocks of a removed file): not while every request waits for the
        // table.
        drop(gone);
    }

    /// Number of nodes known (root included).
    pub fn len(&self) -> usize {
        self.maps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    /// Handle-backed nodes that currently hold a cached descriptor.
    pub fn cached_fds(&self) -> usize {
        lock(&self.fd_cache)
            .iter()
            .filter(|node| node.strong_count() > 0)
            .count()
    }

    /// Whether only the root is known.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Drops every node but the root (at unmount: closes their descriptors).
    pub fn clear(&self) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        maps.by_id.retain(|id, _| *id == ROOT_ID);
        maps.by_key.retain(|_, id| *id == ROOT_ID);
        lock(&self.fd_cache).clear();
        lock(&self.file_cache).clear();
    }
}

/// The generation field of the handle types of `include/linux/exportfs.h` that carry one
/// where this module can find it: ext4, f2fs, XFS (32- and 64-bit inode numbers) and btrfs.
fn handle_generation(handle: &FileHandle) -> u64 {
    const FILEID_INO32_GEN: i32 = 1;
    const FILEID_INO32_GEN_PARENT: i32 = 2;
    const FILEID_BTRFS_WITHOUT_PARENT: i32 = 0x4d;
    const FILEID_BTRFS_WITH_PARENT_ROOT: i32 = 0x4f;
    const FILEID_INO64_GEN: i32 = 0x81;
    const FILEID_INO64_GEN_PARENT: i32 = 0x82;
    let at = match handle.handle_type {
        FILEID_INO32_GEN | FILEID_INO32_GEN_PARENT => 4,
        FILEID_INO64_GEN | FILEID_INO64_GEN_PARENT => 8,
        // struct btrfs_fid: objectid, root_objectid, then gen.
        FILEID_BTRFS_WITHOUT_PARENT..=FILEID_BTRFS_WITH_PARENT_ROOT => 16,
        _ => return 0,
    };
    handle.bytes.get(at..at + 4).map_or(0, |b| {
        u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    })
}

/// Adds `inode` to `queue` (oldest first), then lets go of what the oldest nodes hold
/// (`drop_held`) until at most `max` remain.
fn remember(
    queue: &Mutex<VecDeque<Weak<Inode>>>,
    inode: &Arc<Inode>,
    max: usize,
    drop_held: impl Fn(&Inode),
) {
    let mut queue = lock(queue);
    queue.push_back(Arc::downgrade(inode));
    while queue.len() > max {
        if let Some(old) = queue.pop_front().and_then(|w| w.upgrade()) {
            drop_held(&old);
        }
    }
}

/// The descriptor `inode` holds now, if any: pinned, kept, or still in the cache.
fn held_fd(inode: &Inode) -> Option<Arc<KernelFd>> {
    inode
        .pinned
        .clone()
        .or_else(|| lock(&inode.kept).clone())
        .or_else(|| lock(&inode.cached).clone())
}

/// `statx` of an `O_PATH` descriptor itself (not following a symlink it may be).
pub fn stat_fd(fd: &KernelFd) -> Result<Statx, Errno> {
    sys::statx(
        fd,
        c"",
        (b::AT_EMPTY_PATH | b::AT_SYMLINK_NOFOLLOW) as i32,
        STATX_MASK,
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(handle_type: i32, bytes: &[u8]) -> FileHandle {
        FileHandle {
            handle_type,
            bytes: bytes.into(),
        }
    }

    #[test]
    fn generations_from_handles() {
        let mut ext4 = 12u32.to_ne_bytes().to_vec();
        ext4.extend(7u32.to_ne_bytes());
        assert_eq!(handle_generation(&handle(1, &ext4)), 7);
        let mut xfs64 = 1u64.to_ne_bytes().to_vec();
        xfs64.extend(9u32.to_ne_bytes());
        assert_eq!(handle_generation(&handle(0x81, &xfs64)), 9);
        let mut btrfs = [0u8; 20];
        btrfs[16..].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(handle_generation(&handle(0x4d, &btrfs)), 5);
        assert_eq!(handle_generation(&handle(1, &[1, 2])), 0, "short handle");
        assert_eq!(handle_generation(&handle(0x71, &ext4)), 0, "unknown type");
    }
}
