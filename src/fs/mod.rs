//! FUSE requests served by the in-process kernel: a [`fuser::Filesystem`] over `lkl::sys`.
//!
//! ```text
//! host kernel ──FUSE──► fuser worker thread (one kernel task each)
//!                          │ creds::become_caller(uid, gid, groups)
//!                          │ inode table: node id → O_PATH descriptor (reopened by handle)
//!                          ▼
//!                       lkl::sys::* on the filesystem mounted inside the kernel
//! ```
//!
//! Modelled on virtiofsd's passthrough: nodes are inodes, not paths, so renames never
//! invalidate anything; operations on a node go through its `O_PATH` descriptor, either with
//! `AT_EMPTY_PATH` or, where the kernel needs a real path, `/proc/self/fd/N` (the kernel's
//! procfs is mounted for that). Errnos from the kernel reach the caller unchanged.
//!
//! Every request runs here as its caller, so the kernel here checks permissions. With
//! `default_permissions` (the daemon's default) and on read-only mounts the host kernel
//! checks them too, by the same rules (mode bits and POSIX ACLs, which it asks us for),
//! and then opens regular files without asking (see `open`): a read it can serve from its
//! cache costs no request at all. The price: the host asks for a directory's attributes
//! again after each change in it (see `init`). Not where the host cannot check ACLs
//! (before Linux 4.9) or the filesystem acts on each close (f2fs).
//!
//! POSIX and BSD locks are left to the host kernel (the lock requests answer `ENOSYS`, so
//! FUSE keeps them local): the mount is the only way into the image while it is mounted, so
//! local locks are exact.

pub mod creds;
pub mod handoff;
pub mod idle_poll;
pub mod inode;
pub mod workers;

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, FileAttr, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::lkl::abi::{self, SetTime, Statx, Timestamp};
use crate::lkl::{bindings as b, sys, Errno, KernelFd, CWD};
use creds::{Caller, GroupCache};
use inode::{stat_fd, Inode, InodeTable};
use workers::{Serving, Workers};

/// How long the host may cache names and attributes where a name can have aliases the host
/// does not know about: on filesystems that fold case, "README" and "readme" are one file,
/// so removing one leaves the other cached while gone (see [`KernelFs::names_stable`]).
const TTL: Duration = Duration::from_secs(1);

/// How long the host may cache names (also names known not to exist) and attributes where
/// every name is its own: the host's FUSE mount is the only way into the image while it is
/// mounted, and the host updates or drops what it cached for each change made through it.
const STABLE_TTL: Duration = Duration::from_secs(60);

/// Largest read or write request negotiated with the host.
pub const MAX_IO: u32 = 1 << 20;

/// Reads of at least this many bytes on one open file are served one at a time, in the
/// order they came, by one worker (see [`KernelFs::read_in_stream`]). They come from the
/// host's read-ahead of a file read sequentially, which sends the next window while the
/// current one is still being read; served side by side, the two reach the kernel's own
/// read-ahead out of order and compete for its one CPU. Measured on a 512 MiB file in the
/// host's cache: 1.0-1.7 GB/s side by side, 1.8-2.2 one at a time. Small reads, as a
/// program reading at random offsets from several threads sends, stay parallel: they
/// overlap their waits for the disk.
const STREAM_READ_BYTES: u32 = 128 * 1024;

thread_local! {
    /// Each worker thread's buffer for READ answers (up to [`MAX_IO`] bytes).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A file or directory opened for the host, or a node's own open file (see `open`).
#[derive(Debug)]
struct OpenFile {
    fd: KernelFd,
    /// Serialises `lseek` + `getdents64` on directories.
    dir_lock: Mutex<()>,
    /// Large reads: the one being served, and those waiting for it (see [`STREAM_READ_BYTES`]).
    stream: Mutex<Stream>,
    /// A node's own file opened `O_APPEND`, as an append-only file can only be written.
    append_only: bool,
}

impl OpenFile {
    fn new(fd: KernelFd) -> OpenFile {
        OpenFile {
            fd,
            dir_lock: Mutex::new(()),
            stream: Mutex::new(Stream::default()),
            append_only: false,
        }
    }
}

/// The large reads of one open file (see [`STREAM_READ_BYTES`]).
#[derive(Default)]
struct Stream {
    /// Whether a worker is serving this file's large reads.
    busy: bool,
    /// Reads that came meanwhile, in the order they came: that worker serves them too.
    waiting: std::collections::VecDeque<StreamRead>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("busy", &self.busy)
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

/// A worker's turn at serving a file's large reads. If serving one panics, the reads left
/// waiting are answered with an error (dropping an answer sends EIO) and the next large
/// read starts a new turn, instead of all of them waiting forever.
struct StreamTurn<'a>(&'a OpenFile);

impl Drop for StreamTurn<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return; // the turn ended with nothing left waiting
        }
        let mut stream = self.0.stream.lock().unwrap_or_else(|e| e.into_inner());
        stream.busy = false;
        stream.waiting.clear();
    }
}

/// A large read waiting for its file's stream.
struct StreamRead {
    offset: u64,
    size: u32,
    reply: ReplyData,
}

type OpenFiles = RwLock<HashMap<u64, Arc<OpenFile>>>;

/// The filesystem mounted inside the kernel, served to the host.
pub struct KernelFs {
    inodes: Arc<InodeTable>,
    files: Arc<OpenFiles>,
    next_fh: AtomicU64,
    groups: GroupCache,
    read_only: bool,
    /// `allow_other`: several users share the mount (see [`KernelFs::entry_ttl`]).
    shared: bool,
    /// The host mount is `suid`: set-user-id bits take effect there (see `init`).
    host_honours_setuid: bool,
    /// Names and attributes may be cached for [`STABLE_TTL`] instead of [`TTL`].
    names_stable: bool,
    /// Offer the host's writeback cache (see [`KernelFs::writeback_cache`]).
    offer_writeback: bool,
    /// The host took the offer: it caches writes and may read files opened write-only.
    writeback: bool,
    /// The filesystem does something when a descriptor is closed (see `flush`).
    acts_on_close: bool,
    /// The host opens regular files itself, checking permissions (POSIX ACLs included) on
    /// its own: it sends no OPEN, and reads and writes come with file handle 0 (see `open`).
    host_opens: bool,
    /// The host checks permissions with POSIX ACLs, which it asks us for (see `init`).
    host_checks_acls: bool,
    /// The mount has `default_permissions`: the host checks permissions whatever we ask.
    host_checks_anyway: bool,
    /// What workers do between requests (see [`KernelFs::workers`]).
    workers: Arc<Workers>,
}

/// What the daemon holds for the host right now: these must fall back when the host forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Nodes the host knows (the root included).
    pub nodes: usize,
    /// Open file and directory handles.
    pub open_files: usize,
    /// Kernel `O_PATH` descriptors cached for handle-backed nodes.
    pub cached_fds: usize,
}

impl Stats {
    fn of(inodes: &InodeTable, files: &OpenFiles) -> Stats {
        Stats {
            nodes: inodes.len(),
            open_files: files.read().unwrap_or_else(|e| e.into_inner()).len(),
            cached_fds: inodes.cached_fds(),
        }
    }
}

/// Reads [`Stats`] of a [`KernelFs`] without owning it.
#[derive(Clone)]
pub struct StatsProbe {
    inodes: std::sync::Weak<InodeTable>,
    files: std::sync::Weak<OpenFiles>,
}

impl StatsProbe {
    /// The current figures; `None` once the filesystem is gone.
    pub fn read(&self) -> Option<Stats> {
        let inodes = self.inodes.upgrade()?;
        let files = self.files.upgrade()?;
        Some(Stats::of(&inodes, &files))
    }
}

impl std::fmt::Debug for StatsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsProbe").finish_non_exhaustive()
    }
}

/// `Errno` from the kernel → the FUSE reply's error (same numbers).
fn ferr(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw())
}

fn cname(name: &OsStr) -> Result<CString, Errno> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// For unit tests of threads: whether `what` holds within 10 s, checked every millisecond.
#[cfg(test)]
pub(crate) fn eventually(what: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// `/proc/self/fd/N`: lets path-only calls reach the inode behind an `O_PATH` descriptor.
fn proc_path(fd: &KernelFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw())).expect("a formatted number has no NUL")
}

fn file_type(mode: u32) -> FileType {
    match mode & b::S_IFMT {
        b::S_IFDIR => FileType::Directory,
        b::S_IFLNK => FileType::Symlink,
        b::S_IFCHR => FileType::CharDevice,
        b::S_IFBLK => FileType::BlockDevice,
        b::S_IFIFO => FileType::NamedPipe,
        b::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dirent_type(d_type: u8) -> FileType {
    match d_type {
        abi::dt::DIR => FileType::Directory,
        abi::dt::LNK => FileType::Symlink,
        abi::dt::CHR => FileType::CharDevice,
        abi::dt::BLK => FileType::BlockDevice,
        abi::dt::FIFO => FileType::NamedPipe,
        abi::dt::SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The host's view of a kernel inode's attributes, reported as node `id`.
fn attr(id: u64, st: &Statx) -> FileAttr {
    let mode = u32::from(st.mode);
    FileAttr {
        ino: INodeNo(id),
        size: st.size,
        blocks: st.blocks,
        atime: st.atime.to_system_time(),
        mtime: st.mtime.to_system_time(),
        ctime: st.ctime.to_system_time(),
        crtime: st.btime.to_system_time(),
        kind: file_type(mode),
        perm: (mode & 0o7777) as u16,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: abi::kernel_dev_encode(st.rdev_major, st.rdev_minor),
        blksize: st.blksize,
        flags: 0,
    }
}

/// Attributes that carry no information: for the `.`/`..` entries of READDIRPLUS and for
/// node 0 ("no such name").
fn placeholder_attr(ino: u64, kind: FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// The entry reply for a name that does not exist.
fn no_such_name() -> FileAttr {
    placeholder_attr(0, FileType::RegularFile)
}

fn set_time(t: Option<TimeOrNow>) -> SetTime {
    match t {
        None => SetTime::Omit,
        Some(TimeOrNow::Now) => SetTime::Now,
        Some(TimeOrNow::SpecificTime(t)) => SetTime::At(Timestamp::from_system_time(t)),
    }
}

impl KernelFs {
    /// Serves the directory `root` (inside the kernel), usually a mount point of a disk.
    pub fn new(root: &std::ffi::CStr, read_only: bool) -> Result<KernelFs, Errno> {
        crate::lkl::disk::ensure_procfs()?;
        // Modes arrive from the host already masked by the caller's umask.
        sys::umask(0)?;
        raise_open_file_limit();
        Ok(KernelFs {
            inodes: Arc::new(InodeTable::new(root)?),
            files: Arc::new(RwLock::new(HashMap::new())),
            next_fh: AtomicU64::new(1),
            groups: GroupCache::default(),
            read_only,
            shared: false,
            host_honours_setuid: true,
            names_stable: false,
            offer_writeback: false,
            writeback: false,
            acts_on_close: true,
            host_opens: false,
            host_checks_acls: false,
            host_checks_anyway: false,
            workers: Workers::new(1, Duration::ZERO, Duration::ZERO),
        })
    }

    /// Tells the filesystem that other users than the mounting one use the mount
    /// (`allow_other`), which changes how long names may be cached (see
    /// [`KernelFs::entry_ttl`]).
    pub fn shared_with_other_users(mut self, shared: bool) -> KernelFs {
        self.shared = shared;
        self
    }

    /// Tells the filesystem that the host mount has `default_permissions`: the host checks
    /// permissions itself anyway, so it may as well open files without asking (see `open`).
    pub fn host_checks_permissions(mut self, checks: bool) -> KernelFs {
        self.host_checks_anyway = checks;
        self
    }

    /// Tells the filesystem whether the host mount honours set-user-id and set-group-id bits
    /// (`suid`); by default it assumes so, which costs a request per write (see `init`).
    pub fn host_honours_setuid(mut self, honours: bool) -> KernelFs {
        self.host_honours_setuid = honours;
        self
    }

    /// Tells the filesystem that every name in it is the only way to reach its file under
    /// that spelling: no case folding, or nothing can change (read-only). Names, names known
    /// not to exist, and attributes are then cached by the host for [`STABLE_TTL`].
    pub fn names_stable(mut self, stable: bool) -> KernelFs {
        self.names_stable = stable;
        self
    }

    /// Offers the host its writeback cache: writes land in the host's page cache and reach
    /// the kernel here in large batches, on fsync, close, memory pressure or unmount, which
    /// is what makes small writes fast. fsync(2) and close(2) still return only after the
    /// data reached the kernel (and fsync, the image). The price, and why it is not the
    /// default: errors the kernel here finds when the data arrives (no space, a file too
    /// large for the filesystem) reach the caller at fsync or close, not at write(2).
    ///
    /// The host then also reads pages of files opened write-only, so those are opened
    /// read-write here when the caller may read them too; a file the caller may only write
    /// bypasses the host's cache.
    pub fn writeback_cache(mut self, offer: bool) -> KernelFs {
        self.offer_writeback = offer && !self.read_only;
        self
    }

    /// Tells the filesystem whether the mounted filesystem type has work to do when a
    /// descriptor is closed (a `flush` file operation: of the types served here only f2fs,
    /// which aborts unfinished atomic writes). If not, the host is told once not to send
    /// FLUSH at all, which saves a request on every close(2).
    pub fn acts_on_close(mut self, acts: bool) -> KernelFs {
        self.acts_on_close = acts;
        self
    }

    /// Tells the filesystem how many workers the session runs, how long one checks the
    /// FUSE device for the next request after answering (zero: not at all; see
    /// [`workers`]), and how long CPUs are kept awake after a request (zero: not at all;
    /// see [`idle_poll`]). The session must show the device through
    /// [`KernelFs::workers_handle`], and the disk should report its submissions to
    /// [`Workers::io_submitted`].
    pub fn workers(mut self, threads: usize, busy_poll: Duration, idle_poll: Duration) -> KernelFs {
        self.workers = Workers::new(threads.max(1), busy_poll, idle_poll);
        self
    }

    /// The workers' shared state (see [`KernelFs::workers`]).
    pub fn workers_handle(&self) -> Arc<Workers> {
        self.workers.clone()
    }

    /// How long the host may cache attributes, and names in directories everyone may search.
    fn cache_ttl(&self) -> Duration {
        if self.names_stable {
            STABLE_TTL
        } else {
            TTL
        }
    }

    /// How long the host may cache a name found in directory `parent`.
    ///
    /// Without `default_permissions` the host checks no permissions itself: the kernel here
    /// checks them, as the caller, when a name is looked up. A cached name is not looked up
    /// again, so on a mount shared by several users a name that one user reached in a
    /// directory others may not search (mode 0700, say) would be usable by all of them until
    /// it expires. Names in such directories are therefore not cached on shared mounts
    /// without `default_permissions`; names in directories everyone may search are. With
    /// it the host checks each caller's right to search every directory of a path itself.
    fn entry_ttl(&self, parent: INodeNo) -> Duration {
        if !self.shared || self.host_checks_anyway {
            return self.cache_ttl();
        }
        let searchable_by_all = self
            .node_fd(parent)
            .and_then(|(_, fd)| stat_fd(&fd))
            .is_ok_and(|st| u32::from(st.mode) & 0o001 != 0);
        if searchable_by_all {
            self.cache_ttl()
        } else {
            Duration::ZERO
        }
    }

    /// Closes every descriptor the host still had open (at unmount, so that the kernel
    /// mount is not busy).
    pub fn release_all(&self) {
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.inodes.clear();
    }

    /// Known nodes and open files (for tests and statistics).
    pub fn counts(&self) -> (usize, usize) {
        let stats = Stats::of(&self.inodes, &self.files);
        (stats.nodes, stats.open_files)
    }

    /// A way to read this filesystem's [`Stats`] from elsewhere (a signal thread) while the
    /// FUSE session owns it. It does not keep the filesystem alive.
    pub fn stats_probe(&self) -> StatsProbe {
        StatsProbe {
            inodes: Arc::downgrade(&self.inodes),
            files: Arc::downgrade(&self.files),
        }
    }

    /// Takes on the credentials of the request's caller. Hold the result until the request
    /// is answered: its drop parks the worker or watches the device for the next request.
    fn caller(&self, req: &Request) -> Result<Serving<'_>, Errno> {
        let caller = if req.uid() == 0 && req.gid() == 0 {
            Caller::root()
        } else {
            self.groups.caller(req.pid(), req.uid(), req.gid())
        };
        creds::become_caller(&caller)?;
        Ok(self.workers.serving())
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(ino.0)
    }

    fn node_fd(&self, ino: INodeNo) -> Result<(Arc<Inode>, Arc<KernelFd>), Errno> {
        let node = self.node(ino)?;
        let fd = self.inodes.fd(&node)?;
        Ok((node, fd))
    }

    fn file(&self, fh: fuser::FileHandle) -> Result<Arc<OpenFile>, Errno> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// The open file a data request on node `ino` names: `fh`, or the node's own (opened
    /// writable if `write`) when the host opened the file without telling us (see `open`).
    fn file_for(
        &self,
        ino: INodeNo,
        fh: fuser::FileHandle,
        write: bool,
    ) -> Result<Arc<OpenFile>, Errno> {
        if fh.0 != 0 || !self.host_opens {
            return self.file(fh);
        }
        let node = self.node(ino)?;
        self.inodes
            .node_file(&node, write, |write| self.open_node_file(&node, write))
    }

    /// Opens a node's own file as the daemon: the host has already checked the caller's
    /// permission to open it, and later callers reuse it. Reads and writes through it still
    /// run as their caller (clearing set-user-id bits on write, say).
    ///
    /// An append-only file (`chattr +a`) opens for writing only with `O_APPEND`: its writes
    /// are then refused unless the host's own descriptor appends too (see `do_write`).
    /// Not under the writeback cache, where the host places every write itself.
    fn open_node_file(&self, node: &Arc<Inode>, write: bool) -> Result<OpenFile, Errno> {
        let fd = self.inodes.fd(node)?;
        let path = proc_path(&fd);
        let open = |flags: u32| {
            creds::as_daemon(|| sys::openat(CWD, &path, (flags | b::O_CLOEXEC) as i32, 0))
        };
        if !write {
            return Ok(OpenFile::new(open(b::O_RDONLY)?));
        }
        match open(b::O_RDWR) {
            Err(Errno::EPERM) if !self.writeback => Ok(OpenFile {
                append_only: true,
                ..OpenFile::new(open(b::O_RDWR | b::O_APPEND)?)
            }),
            result => Ok(OpenFile::new(result?)),
        }
    }

    /// Removes or replaces `name` in `dir` with `remove`, keeping the file the host may
    /// still hold open (see [`InodeTable::removing`]).
    fn remove_name(
        &self,
        dir: &KernelFd,
        name: &std::ffi::CStr,
        remove: impl FnOnce() -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        if self.host_opens {
            self.inodes.removing(dir, name);
        }
        remove()
    }

    fn add_file(&self, fd: KernelFd) -> fuser::FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(OpenFile::new(fd)));
        fuser::FileHandle(fh)
    }

    /// The host closed `fh`: its kernel descriptor closes once no request uses it.
    fn remove_file(&self, fh: fuser::FileHandle) {
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
    }

    fn stat_node(&self, node: &Arc<Inode>) -> Result<FileAttr, Errno> {
        // The root keeps FUSE's node id 1 as its number: the host set it at mount time.
        Ok(attr(node.id, &self.inodes.stat(node)?))
    }

    fn lookup_entry(&self, parent: INodeNo, name: &OsStr) -> Result<(FileAttr, Generation), Errno> {
        let parent = self.node(parent)?;
        let name = cname(name)?;
        let found = self.inodes.lookup(&parent, &name)?;
        Ok((
            attr(found.inode.id, &found.stat),
            Generation(found.inode.generation()),
        ))
    }

    #[allow(clippy::too_many_arguments)] // the FUSE request's fields, one each
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<fuser::FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let (node, fd) = self.node_fd(ino)?;
        let empty = b::AT_EMPTY_PATH as i32;
        let nofollow = b::AT_SYMLINK_NOFOLLOW as i32;
        if let Some(mode) = mode {
            sys::fchmodat2(&*fd, c"", mode & 0o7777, empty)?;
        }
        if uid.is_some() || gid.is_some() {
            // -1 (as u32) leaves that id unchanged.
            sys::fchownat(
                &*fd,
                c"",
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
                empty | nofollow,
            )?;
        }
        if let Some(size) = size {
            let size = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
            // ftruncate(2) of an open file: through the file (the node's own under handle 0),
            // as the open already settled that the caller may write it.
            match fh.map(|fh| self.file_for(ino, fh, true)).transpose()? {
                Some(file) => sys::ftruncate(&file.fd, size)?,
                None => sys::truncate(&proc_path(&fd), size)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let set = |atime, mtime| {
                let times = abi::utimens_to_kernel(set_time(atime), set_time(mtime));
                sys::utimensat(&*fd, Some(c""), Some(&times), empty | nofollow)
            };
            // Under the writeback cache the host keeps modification times itself and turns
            // "now" into the time it read, equal to the change time it sends. An explicit
            // time needs ownership, "now" only write access: a caller who may write but does
            // not own the file must get what "now" gives.
            let now_if_ctime = |t: Option<TimeOrNow>| match t {
                Some(TimeOrNow::SpecificTime(t)) if Some(t) == ctime => Some(TimeOrNow::Now),
                other => other,
            };
            match set(atime, mtime) {
                Err(Errno::EPERM) if self.writeback && now_if_ctime(mtime) != mtime => {
                    set(now_if_ctime(atime), now_if_ctime(mtime))?
                }
                result => result?,
            }
        }
        self.stat_node(&node)
    }

    fn do_open(&self, ino: INodeNo, flags: i32) -> Result<(fuser::FileHandle, FopenFlags), Errno> {
        let (_, fd) = self.node_fd(ino)?;
        let path = proc_path(&fd);
        let (file, fopen) = self.open_for_host(flags, |flags| sys::openat(CWD, &path, flags, 0))?;
        Ok((self.add_file(file), fopen))
    }

    /// Opens with the host's `flags` through `open`. Under the writeback cache a write-only
    /// open is first tried read-write (the host reads around partial page writes); if the
    /// caller may not read the file, it is opened write-only and the host is told not to
    /// cache it (`FOPEN_DIRECT_IO`), so that it never needs to read it.
    fn open_for_host(
        &self,
        flags: i32,
        open: impl Fn(i32) -> Result<KernelFd, Errno>,
    ) -> Result<(KernelFd, FopenFlags), Errno> {
        let (widened, fopen) = open_flags(flags, self.writeback, true);
        match open(widened) {
            Err(Errno::EACCES) if self.writeback && flags & libc::O_ACCMODE == libc::O_WRONLY => {
                let (exact, mut fopen) = open_flags(flags, self.writeback, false);
                fopen.remove(FopenFlags::FOPEN_KEEP_CACHE);
                fopen.insert(FopenFlags::FOPEN_DIRECT_IO);
                Ok((open(exact)?, fopen))
            }
            result => Ok((result?, fopen)),
        }
    }

    fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, Generation, fuser::FileHandle, FopenFlags), Errno> {
        let (pnode, dir) = self.node_fd(parent)?;
        let name = cname(name)?;
        let create = |flags| sys::openat(&*dir, &name, flags | b::O_CREAT as i32, mode);
        if self.host_opens {
            return self.create_without_handle(&pnode, &name, flags, create);
        }
        let (file, fopen) = self.open_for_host(flags, create)?;
        let found = self.inodes.lookup(&pnode, &name)?;
        Ok((
            attr(found.inode.id, &found.stat),
            Generation(found.inode.generation()),
            self.add_file(file),
            fopen,
        ))
    }

    /// `do_create` where the host opens files itself (see `open`). It then sends no RELEASE
    /// for any file, created ones included, so the created file gets no handle (0): its
    /// reads and writes use the node's own file, which the descriptor opened here becomes
    /// when it can serve both (opened read-write, without `O_APPEND`: the host places
    /// appends itself). The caller creates the file, so owner, permission to create and
    /// `O_EXCL`/`O_TRUNC` are the kernel's as always; an existing file that the caller may
    /// only open as asked is opened so, and that descriptor is not kept.
    fn create_without_handle(
        &self,
        parent: &Arc<Inode>,
        name: &std::ffi::CStr,
        flags: i32,
        create: impl Fn(i32) -> Result<KernelFd, Errno>,
    ) -> Result<(FileAttr, Generation, fuser::FileHandle, FopenFlags), Errno> {
        let (asked, fopen) = open_flags(flags, self.writeback, false);
        let both = (asked & !((b::O_ACCMODE | b::O_APPEND) as i32)) | b::O_RDWR as i32;
        let kept = match create(both) {
            Err(Errno::EACCES | Errno::EPERM) if asked != both => {
                drop(create(asked)?);
                None
            }
            result => Some(result?),
        };
        let found = self.inodes.lookup(parent, name)?;
        if let Some(fd) = kept {
            // An error here only means the node opens its own file when first used.
            let _ = self
                .inodes
                .node_file(&found.inode, true, |_| Ok(OpenFile::new(fd)));
        }
        Ok((
            attr(found.inode.id, &found.stat),
            Generation(found.inode.generation()),
            fuser::FileHandle(0),
            fopen,
        ))
    }

    fn make_node(
        &self,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&KernelFd, &std::ffi::CStr) -> Result<(), Errno>,
    ) -> Result<(FileAttr, Generation), Errno> {
        let (pnode, dir) = self.node_fd(parent)?;
        let name = cname(name)?;
        make(&dir, &name)?;
        let found = self.inodes.lookup(&pnode, &name)?;
        Ok((
            attr(found.inode.id, &found.stat),
            Generation(found.inode.generation()),
        ))
    }

    /// Answers a large read of `file` (see [`STREAM_READ_BYTES`]): at once if no other
    /// worker serves the file's large reads, else that worker answers it once done with
    /// the ones before it, and this one goes back to the device. Waiting for that worker
    /// on a lock instead cost a sleep and a cross-CPU wake-up per read: a sequential read
    /// of a 512 MiB file in the host's cache, median of 12, went from 2.02 to 2.12 GB/s
    /// (`-s`: 2.23), and from 1.33 to 1.41 GB/s with the host's caches dropped.
    fn read_in_stream(file: &OpenFile, mut read: StreamRead) {
        {
            let mut stream = file.stream.lock().unwrap_or_else(|e| e.into_inner());
            if stream.busy {
                stream.waiting.push_back(read);
                return;
            }
            stream.busy = true;
        }
        let _turn = StreamTurn(file);
        let _in_order = workers::in_order_reads();
        loop {
            read_and_answer(file, read.offset, read.size, read.reply);
            let mut stream = file.stream.lock().unwrap_or_else(|e| e.into_inner());
            match stream.waiting.pop_front() {
                Some(next) => read = next,
                None => {
                    stream.busy = false;
                    return;
                }
            }
        }
    }

    fn do_write(
        &self,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        host_flags: i32,
    ) -> Result<u32, Errno> {
        let file = self.file_for(ino, fh, true)?;
        if file.append_only && host_flags & libc::O_APPEND == 0 {
            // What opening it without O_APPEND would have said.
            return Err(Errno::EPERM);
        }
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let mut done = 0;
        while done < data.len() {
            let n = sys::pwrite64(&file.fd, &data[done..], offset + done as i64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        u32::try_from(done).map_err(|_| Errno::EINVAL)
    }

    fn do_readdir(
        &self,
        fh: fuser::FileHandle,
        offset: u64,
        mut add: impl FnMut(&abi::Dirent<'_>) -> Result<bool, Errno>,
    ) -> Result<(), Errno> {
        let file = self.file(fh)?;
        let _positioned = file.dir_lock.lock().unwrap_or_else(|e| e.into_inner());
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        // Offsets are the filesystem's own d_off cookies: seeking to the last one the host
        // received resumes exactly after it, without buffering the directory.
        sys::lseek(&file.fd, offset, b::SEEK_SET)?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = sys::getdents64(&file.fd, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for entry in abi::dirents(&buf[..n]) {
                if add(&entry?)? {
                    return Ok(());
                }
            }
        }
    }

    /// The node and a `/proc/self/fd/N` path to it, with the descriptor `N` kept open for as
    /// long as the target lives: closed (say, evicted from the descriptor cache by another
    /// request), its number could name another file by the time the path is used.
    fn xattr_target(&self, ino: INodeNo) -> Result<XattrTarget, Errno> {
        let (node, fd) = self.node_fd(ino)?;
        let path = proc_path(&fd);
        Ok(XattrTarget {
            node,
            path,
            _fd: fd,
        })
    }
}

/// What an xattr request works on (see [`KernelFs::xattr_target`]).
struct XattrTarget {
    node: Arc<Inode>,
    path: CString,
    _fd: Arc<KernelFd>,
}

/// Whether `name` is one of the extended attributes that hold POSIX ACLs.
fn is_posix_acl(name: &std::ffi::CStr) -> bool {
    matches!(
        name.to_bytes(),
        b"system.posix_acl_access" | b"system.posix_acl_default"
    )
}

/// Host open flags → kernel flags for reopening through `/proc/self/fd`, and the FUSE open
/// flags to answer with. `O_DIRECT` cannot be honoured by a kernel without an MMU (it cannot
/// pin host pages), so it is dropped here and the host is told to bypass its own page cache
/// for the file instead, which is what the caller wanted.
///
/// Pages the host cached stay valid from one open to the next (`FOPEN_KEEP_CACHE`): every
/// change to a file's data goes through the host, which updates or drops its pages itself.
///
/// With the writeback cache the host decides where appended data goes (it knows the size),
/// so `O_APPEND` here would move its writes; and it reads whole pages around partial writes,
/// so write-only opens are widened to read-write when `widen_write_only` (see
/// [`KernelFs::open_for_host`]).
fn open_flags(host: i32, writeback: bool, widen_write_only: bool) -> (i32, FopenFlags) {
    let mut fopen = FopenFlags::empty();
    let mut host = host;
    if host & libc::O_DIRECT != 0 {
        host &= !libc::O_DIRECT;
        fopen |= FopenFlags::FOPEN_DIRECT_IO;
    } else {
        fopen |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if writeback {
        host &= !libc::O_APPEND;
        if widen_write_only && host & libc::O_ACCMODE == libc::O_WRONLY {
            host = (host & !libc::O_ACCMODE) | libc::O_RDWR;
        }
    }
    host &= !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW);
    (abi::open_flags_to_kernel(host) | b::O_CLOEXEC as i32, fopen)
}

/// Nodes of filesystems without file handles keep a descriptor each; the kernel's default
/// limit of 1024 would cap how many files the host can have looked up.
fn raise_open_file_limit() {
    const RLIMIT_NOFILE: u32 = 7;
    const NR_OPEN: u64 = 1 << 20;
    if let Err(e) = sys::setrlimit(RLIMIT_NOFILE, NR_OPEN, NR_OPEN) {
        tracing::warn!("cannot raise the kernel's open file limit: {e}");
    }
}

macro_rules! try_reply {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(ferr(e)),
        }
    };
}

/// Takes on the caller's credentials, or answers the error and returns. Then binds `reply`
/// again, after the guard, so that a reply a path forgot to send is answered (by its drop)
/// before the guard's drop may park the worker.
macro_rules! serve {
    ($fs:ident, $req:ident, $reply:ident) => {
        let _serving = try_reply!($reply, $fs.caller($req));
        let $reply = $reply;
    };
    ($fs:ident, $req:ident, mut $reply:ident) => {
        let _serving = try_reply!($reply, $fs.caller($req));
        let mut $reply = $reply;
    };
}

/// Reads up to `size` bytes of `file` at `offset` and answers them, from this thread's
/// reused buffer: a fresh one per READ cost a page fault per 4 KiB and zeroing, about 7%
/// of the CPU time of a large sequential read.
fn read_and_answer(file: &OpenFile, offset: u64, size: u32, reply: ReplyData) {
    READ_BUFFER.with_borrow_mut(|buf| {
        let n = try_reply!(reply, read_into(file, offset, size, buf));
        reply.data(&buf[..n]);
    });
}

/// Reads up to `size` bytes (at most [`MAX_IO`]) of `file` at `offset` into `buf`, grown as
/// needed and never shrunk or cleared, and returns how many it read (fewer at the end).
fn read_into(file: &OpenFile, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize, Errno> {
    let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
    let wanted = size.min(MAX_IO) as usize;
    if buf.len() < wanted {
        buf.resize(wanted, 0);
    }
    let buf = &mut buf[..wanted];
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread64(&file.fd, &mut buf[done..], offset + done as i64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

impl Filesystem for KernelFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // HANDLE_KILLPRIV_V2: clearing set-user-id/set-group-id bits and file capabilities on
        // write, truncate and chown is left to us, and the kernel here does it anyway (every
        // write is a real write(2) as the caller). Without it the host asks for
        // security.capability before every single write. The price: the host keeps showing
        // the cleared bits until it refreshes its cached attributes, so it is taken only
        // when the host ignores set-user-id bits anyway (nosuid, the default).
        let killpriv = if self.host_honours_setuid {
            InitFlags::empty()
        } else {
            InitFlags::FUSE_HANDLE_KILLPRIV_V2
        };
        let wanted = killpriv
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES;
        let wanted = if self.offer_writeback {
            wanted | InitFlags::FUSE_WRITEBACK_CACHE
        } else {
            wanted
        };
        // POSIX_ACL: the host checks permissions itself, POSIX ACLs (which it asks us for)
        // included, exactly as the kernel here would. Taken wherever the host checks
        // anyway (`default_permissions`, the default), so that it honours ACLs too, and on
        // read-only mounts. The host then needs no OPEN to check permissions, so none is
        // answered (see `open`), except where closing a descriptor does something (f2fs),
        // which needs a descriptor per open. Its price: the host asks for a directory's
        // attributes again after each change in it, before its next permission check
        // there, one request more per file created or removed. Without OPEN an O_TRUNC
        // open is a truncate of its own: with ATOMIC_O_TRUNC the host would expect the
        // OPEN to truncate.
        let host_checks = (self.host_checks_anyway || (self.read_only && !self.acts_on_close))
            && config.capabilities().contains(InitFlags::FUSE_POSIX_ACL);
        let host_opens = host_checks && !self.acts_on_close;
        let wanted = match (host_checks, host_opens) {
            (true, true) => (wanted - InitFlags::FUSE_ATOMIC_O_TRUNC) | InitFlags::FUSE_POSIX_ACL,
            (true, false) => wanted | InitFlags::FUSE_POSIX_ACL,
            _ => wanted,
        };
        let supported = config.capabilities() & wanted;
        let _ = config.add_capabilities(supported);
        self.writeback = supported.contains(InitFlags::FUSE_WRITEBACK_CACHE);
        self.host_checks_acls = supported.contains(InitFlags::FUSE_POSIX_ACL);
        self.host_opens = self.host_checks_acls && host_opens;
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        Ok(())
    }

    fn destroy(&mut self) {
        self.release_all();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        serve!(self, req, reply);
        match self.lookup_entry(parent, name) {
            Ok((attr, generation)) => reply.entry(&self.entry_ttl(parent), &attr, generation),
            // Node 0 is FUSE's "no such name", which the host caches like a found name and
            // drops when it creates that name itself. Not where names alias (case folding):
            // creating "a" there does not drop a cached miss of "A".
            Err(Errno::ENOENT) if self.names_stable => {
                reply.entry(&self.entry_ttl(parent), &no_such_name(), Generation(0))
            }
            Err(e) => reply.error(ferr(e)),
        }
    }

    // A forget has no answer, but the worker polls after it as after an answer: the host
    // sends one right after it has answered an unlink or rmdir (when it drops the removed
    // inode), and the caller's next request follows at once.
    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
        self.workers.after_forget(req.unique().0);
    }

    fn getattr(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Option<fuser::FileHandle>,
        reply: ReplyAttr,
    ) {
        serve!(self, req, reply);
        let result = (|| {
            // Handle 0: a file the host opened without asking (see `open`).
            if let Some(fh) = fh.filter(|fh| fh.0 != 0) {
                let file = self.file(fh)?;
                let st = sys::statx(&file.fd, c"", b::AT_EMPTY_PATH as i32, inode::STATX_MASK)?;
                return Ok(attr(ino.0, &st));
            }
            self.stat_node(&self.node(ino)?)
        })();
        let attr = try_reply!(reply, result);
        reply.attr(&self.cache_ttl(), &attr);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<fuser::FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        serve!(self, req, reply);
        let attr = try_reply!(
            reply,
            self.do_setattr(ino, mode, uid, gid, size, atime, mtime, ctime, fh)
        );
        reply.attr(&self.cache_ttl(), &attr);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        serve!(self, req, reply);
        let (_, fd) = try_reply!(reply, self.node_fd(ino));
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        let n = try_reply!(reply, sys::readlinkat(&*fd, c"", &mut buf));
        reply.data(&buf[..n]);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        serve!(self, req, reply);
        let (attr, generation) = try_reply!(
            reply,
            self.make_node(parent, name, |dir, name| sys::mknodat(
                dir, name, mode, rdev
            ))
        );
        reply.entry(&self.entry_ttl(parent), &attr, generation);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        serve!(self, req, reply);
        let (attr, generation) = try_reply!(
            reply,
            self.make_node(parent, name, |dir, name| sys::mkdirat(dir, name, mode))
        );
        reply.entry(&self.entry_ttl(parent), &attr, generation);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(self, req, reply);
        let (_, dir) = try_reply!(reply, self.node_fd(parent));
        let name = try_reply!(reply, cname(name));
        try_reply!(
            reply,
            self.remove_name(&dir, &name, || sys::unlinkat(&*dir, &name, 0))
        );
        reply.ok();
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(self, req, reply);
        let (_, dir) = try_reply!(reply, self.node_fd(parent));
        let name = try_reply!(reply, cname(name));
        try_reply!(reply, sys::unlinkat(&*dir, &name, b::AT_REMOVEDIR as i32));
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        serve!(self, req, reply);
        let target = try_reply!(reply, cname(target.as_os_str()));
        let (attr, generation) = try_reply!(
            reply,
            self.make_node(parent, link_name, |dir, name| sys::symlinkat(
                &target, dir, name
            ))
        );
        reply.entry(&self.entry_ttl(parent), &attr, generation);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        serve!(self, req, reply);
        let result = (|| {
            let (_, olddir) = self.node_fd(parent)?;
            let (_, newdir) = self.node_fd(newparent)?;
            let (name, newname) = (cname(name)?, cname(newname)?);
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            let flags = abi::rename_flags_to_kernel(flags.bits())?;
            let rename = || sys::renameat2(&*olddir, &name, &*newdir, &newname, flags);
            if exchange {
                rename() // nothing loses its name
            } else {
                self.remove_name(&newdir, &newname, rename)
            }
        })();
        try_reply!(reply, result);
        reply.ok();
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        serve!(self, req, reply);
        let result = (|| {
            let (_, fd) = self.node_fd(ino)?;
            // Through the magic link: linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH.
            self.make_node(newparent, newname, |dir, name| {
                sys::linkat(CWD, &proc_path(&fd), dir, name, b::AT_SYMLINK_FOLLOW as i32)
            })
        })();
        let (attr, generation) = try_reply!(reply, result);
        reply.entry(&self.entry_ttl(newparent), &attr, generation);
    }

    /// Where the host checks permissions itself (see `init`), it is told once that we do
    /// not open files: ENOSYS, after which it opens regular files without asking, and
    /// reading a small file the host has cached costs no request at all. Reads and writes
    /// then name only the node (file handle 0) and use the node's own open file.
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.host_opens {
            let _serving = self.workers.serving();
            return reply.error(fuser::Errno::ENOSYS);
        }
        serve!(self, req, reply);
        let (fh, fopen) = try_reply!(reply, self.do_open(ino, flags.0));
        reply.opened(fh, fopen);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        serve!(self, req, reply);
        let file = try_reply!(reply, self.file_for(ino, fh, false));
        if size >= STREAM_READ_BYTES {
            let read = StreamRead {
                offset,
                size,
                reply,
            };
            return KernelFs::read_in_stream(&file, read);
        }
        read_and_answer(&file, offset, size, reply);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        serve!(self, req, reply);
        let n = try_reply!(reply, self.do_write(ino, fh, offset, data, flags.0));
        reply.written(n);
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if !self.acts_on_close {
            // ENOSYS: the host stops sending FLUSH. Write errors still reach close(2): the
            // host checks its own writeback before it would have sent the request.
            return reply.error(fuser::Errno::ENOSYS);
        }
        serve!(self, req, reply);
        // close(2) of a duplicate reports what the filesystem's ->flush says (deferred
        // write errors) without closing the file the host still uses.
        let result = self
            .file(fh)
            .and_then(|file| sys::dup(&file.fd))
            .and_then(sys::close);
        try_reply!(reply, result);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _serving = self.workers.serving();
        self.remove_file(fh);
        // The host sends this in the background: close(2) does not wait for the answer.
        let _direct = handoff::nobody_waits();
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        serve!(self, req, reply);
        let file = try_reply!(reply, self.file_for(ino, fh, false));
        let result = if datasync {
            sys::fdatasync(&file.fd)
        } else {
            sys::fsync(&file.fd)
        };
        try_reply!(reply, result);
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        serve!(self, req, reply);
        let flags = (b::O_RDONLY | b::O_DIRECTORY) as i32;
        let (fh, _) = try_reply!(reply, self.do_open(ino, flags));
        reply.opened(fh, FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        serve!(self, req, mut reply);
        let result = self.do_readdir(fh, offset, |e| {
            let name = OsStr::from_bytes(e.name.to_bytes());
            Ok(reply.add(INodeNo(e.ino), e.off as u64, dirent_type(e.d_type), name))
        });
        try_reply!(reply, result);
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        serve!(self, req, mut reply);
        let parent = try_reply!(reply, self.node(ino));
        let ttl = self.entry_ttl(ino);
        let result = self.do_readdir(fh, offset, |e| {
            let name_bytes = e.name.to_bytes();
            let name = OsStr::from_bytes(name_bytes);
            if name_bytes == b"." || name_bytes == b".." {
                // The host never links these; a lookup would leak a reference.
                let attr = placeholder_attr(e.ino, FileType::Directory);
                return Ok(reply.add(
                    INodeNo(e.ino),
                    e.off as u64,
                    name,
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                ));
            }
            let found = match self.inodes.lookup_listed(&parent, e.name, e.ino) {
                Ok(found) => found,
                // Removed since getdents64 saw it: not there any more.
                Err(Errno::ENOENT) => return Ok(false),
                Err(err) => return Err(err),
            };
            let attr = attr(found.inode.id, &found.stat);
            let full = reply.add(
                INodeNo(found.inode.id),
                e.off as u64,
                name,
                &ttl,
                &attr,
                Generation(found.inode.generation()),
            );
            if full {
                // Not sent: the host holds no reference to it.
                self.inodes.forget(found.inode.id, 1);
            }
            Ok(full)
        });
        try_reply!(reply, result);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _serving = self.workers.serving();
        self.remove_file(fh);
        // The host sends this in the background: close(2) does not wait for the answer.
        let _direct = handoff::nobody_waits();
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(req, ino, fh, datasync, reply);
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        serve!(self, req, reply);
        let st = try_reply!(reply, sys::fstatfs(&**self.inodes.root_fd()));
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        reply.statfs(
            st.blocks,
            st.blocks_free,
            st.blocks_avail,
            st.files,
            st.files_free,
            clamp(st.block_size),
            clamp(st.name_max),
            clamp(st.fragment_size),
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        serve!(self, req, reply);
        let result = (|| {
            let XattrTarget { node, path, _fd } = self.xattr_target(ino)?;
            if node.is_symlink() {
                // Following /proc/self/fd would reach the link's target; the kernel refuses
                // user.* on symlinks anyway, and no other namespace is reachable from here.
                return Err(Errno::EPERM);
            }
            let flags = abi::xattr_flags_to_kernel(flags)?;
            sys::setxattr(&path, &cname(name)?, value, flags)
        })();
        try_reply!(reply, result);
        reply.ok();
    }

    /// The inode-attribute ioctls (`lsattr`, `chattr`: see [`abi::FileAttrIoctl`]) go to the
    /// kernel on the open file, as the caller, so it decides who may set which flag (the
    /// owner, and only with `CAP_LINUX_IMMUTABLE` for `i` and `a`). Every other command is
    /// refused with `ENOTTY`, which is also what the host makes of "not implemented", at
    /// once and without entering the kernel: programs ask one on nearly every open (Python's
    /// `open()` calls `isatty`), and fuser's default logs a line and skips the worker
    /// bookkeeping (see [`workers`]), which made the answer three times a `getxattr`.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let Some(request) = abi::FileAttrIoctl::from_host(cmd) else {
            let _serving = self.workers.serving();
            return reply.error(fuser::Errno::ENOTTY);
        };
        serve!(self, req, reply);
        let result = (|| {
            let file = self.file_for(ino, fh, false)?;
            let mut arg = vec![0u8; request.arg_size()];
            if request.returns_arg() {
                if (out_size as usize) < arg.len() {
                    return Err(Errno::EINVAL);
                }
            } else {
                let given = in_data.get(..arg.len()).ok_or(Errno::EINVAL)?;
                arg.copy_from_slice(given);
            }
            sys::ioctl_file_attr(&file.fd, request, &mut arg)?;
            if !request.returns_arg() && self.host_opens {
                // Append-only may have come or gone: the node's own file opens accordingly.
                self.inodes.reopen_node_file(&*self.node(ino)?);
            }
            Ok(if request.returns_arg() {
                arg
            } else {
                Vec::new()
            })
        })();
        let out = try_reply!(reply, result);
        reply.ioctl(0, &out);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        serve!(self, req, reply);
        let result = (|| {
            let XattrTarget { node, path, _fd } = self.xattr_target(ino)?;
            if node.is_symlink() {
                return Err(Errno::ENODATA);
            }
            let name = cname(name)?;
            let mut buf = vec![0u8; (size as usize).min(b::XATTR_SIZE_MAX as usize)];
            let n = match sys::getxattr(&path, &name, &mut buf) {
                // The host asks for ACLs to check permissions (see `init`) and takes
                // "not supported" for a failed check: on filesystems without ACLs there
                // simply is none.
                Err(Errno::EOPNOTSUPP) if self.host_checks_acls && is_posix_acl(&name) => {
                    Err(Errno::ENODATA)
                }
                result => result,
            }?;
            buf.truncate(n);
            Ok((n, buf))
        })();
        let (n, value) = try_reply!(reply, result);
        if size == 0 {
            // Size 0 asks only how big the value is.
            reply.size(u32::try_from(n).unwrap_or(u32::MAX));
        } else {
            reply.data(&value);
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        serve!(self, req, reply);
        let result = (|| {
            let XattrTarget { node, path, _fd } = self.xattr_target(ino)?;
            if node.is_symlink() {
                return Ok((0, Vec::new()));
            }
            let mut buf = vec![0u8; (size as usize).min(b::XATTR_LIST_MAX as usize)];
            let n = sys::listxattr(&path, &mut buf)?;
            buf.truncate(n);
            Ok((n, buf))
        })();
        let (n, list) = try_reply!(reply, result);
        if size == 0 {
            reply.size(u32::try_from(n).unwrap_or(u32::MAX));
        } else {
            reply.data(&list);
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(self, req, reply);
        let result = (|| {
            let XattrTarget { node, path, _fd } = self.xattr_target(ino)?;
            if node.is_symlink() {
                return Err(Errno::ENODATA);
            }
            sys::removexattr(&path, &cname(name)?)
        })();
        try_reply!(reply, result);
        reply.ok();
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        serve!(self, req, reply);
        let (_, fd) = try_reply!(reply, self.node_fd(ino));
        let flags = (b::AT_EMPTY_PATH | b::AT_EACCESS | b::AT_SYMLINK_NOFOLLOW) as i32;
        try_reply!(reply, sys::faccessat2(&*fd, c"", mask.bits(), flags));
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        serve!(self, req, reply);
        let (attr, generation, fh, fopen) =
            try_reply!(reply, self.do_create(parent, name, mode, flags));
        reply.created(&self.entry_ttl(parent), &attr, generation, fh, fopen);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        // ENOSYS: the host keeps POSIX locks itself (see the module docs).
        reply.error(fuser::Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        serve!(self, req, reply);
        let result = (|| {
            let file = self.file_for(ino, fh, true)?;
            let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
            let length = i64::try_from(length).map_err(|_| Errno::EINVAL)?;
            sys::fallocate(
                &file.fd,
                abi::fallocate_mode_to_kernel(mode)?,
                offset,
                length,
            )
        })();
        try_reply!(reply, result);
        reply.ok();
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        serve!(self, req, reply);
        let file = try_reply!(reply, self.file_for(ino, fh, false));
        let whence = try_reply!(reply, u32::try_from(whence).map_err(|_| Errno::EINVAL));
        let pos = try_reply!(reply, sys::lseek(&file.fd, offset, whence));
        reply.offset(pos);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: fuser::FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: fuser::FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        serve!(self, req, reply);
        let result = (|| {
            let fin = self.file_for(ino_in, fh_in, false)?;
            let fout = self.file_for(ino_out, fh_out, true)?;
            let mut off_in = i64::try_from(offset_in).map_err(|_| Errno::EINVAL)?;
            let mut off_out = i64::try_from(offset_out).map_err(|_| Errno::EINVAL)?;
            // The reply carries a u32 count.
            let len = len.min(u64::from(u32::MAX >> 1)) as usize;
            let n = sys::copy_file_range(
                &fin.fd,
                Some(&mut off_in),
                &fout.fd,
                Some(&mut off_out),
                len,
                0,
            )?;
            u32::try_from(n).map_err(|_| Errno::EINVAL)
        })();
        let n = try_reply!(reply, result);
        reply.written(n);
    }
}

impl std::fmt::Debug for KernelFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (nodes, files) = self.counts();
        f.debug_struct("KernelFs")
            .field("nodes", &nodes)
            .field("files", &files)
            .field("read_only", &self.read_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accmode(kernel_flags: i32) -> i32 {
        kernel_flags & b::O_ACCMODE as i32
    }

    #[test]
    fn host_pages_are_kept_unless_direct() {
        let (_, fopen) = open_flags(libc::O_RDONLY, false, true);
        assert_eq!(fopen, FopenFlags::FOPEN_KEEP_CACHE);
        let (flags, fopen) = open_flags(libc::O_RDONLY | libc::O_DIRECT, false, true);
        assert_eq!(fopen, FopenFlags::FOPEN_DIRECT_IO);
        assert_eq!(flags & b::O_DIRECT as i32, 0, "O_DIRECT is never passed on");
    }

    #[test]
    fn writeback_widens_write_only_and_drops_append() {
        let wronly_append = libc::O_WRONLY | libc::O_APPEND;
        let (flags, _) = open_flags(wronly_append, false, true);
        assert_eq!(accmode(flags), b::O_WRONLY as i32, "no writeback: as asked");
        assert_ne!(flags & b::O_APPEND as i32, 0);

        let (flags, _) = open_flags(wronly_append, true, true);
        assert_eq!(
            accmode(flags),
            b::O_RDWR as i32,
            "the host reads around partial pages"
        );
        assert_eq!(
            flags & b::O_APPEND as i32,
            0,
            "the host positions appends itself"
        );

        let (flags, _) = open_flags(wronly_append, true, false);
        assert_eq!(
            accmode(flags),
            b::O_WRONLY as i32,
            "the fallback keeps write-only"
        );

        let (flags, _) = open_flags(libc::O_RDONLY, true, true);
        assert_eq!(
            accmode(flags),
            b::O_RDONLY as i32,
            "read-only opens stay so"
        );
    }
}
