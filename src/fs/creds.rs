//! Each request runs inside the kernel with its caller's credentials.
//!
//! Every host thread is its own kernel task (see `kernel/arch/lklrs`), so credentials set here
//! belong to the worker thread alone. The task keeps uid/euid 0 and switches only the
//! filesystem ids and the supplementary groups:
//!
//! - `setfsuid(caller)` makes every permission check (DAC, ACLs, ownership of new files) the
//!   caller's, and drops the filesystem capabilities (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`,
//!   `CAP_CHOWN`, ...) unless the caller is root: exactly what a native mount would check;
//! - the remaining capabilities stay, so the daemon can still reopen inodes by handle
//!   ([`as_daemon`]) and change groups; capability-guarded namespaces such as `trusted.*`
//!   xattrs are already refused by the host kernel before a request reaches us.
//!
//! The switch is cached per thread: a worker serving one user changes nothing per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lkl::{sys, Errno};

/// Who asked: host uid, gid and supplementary groups (identical numbers inside the image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Filesystem uid.
    pub uid: u32,
    /// Filesystem gid.
    pub gid: u32,
    /// Supplementary groups, sorted.
    pub groups: Vec<u32>,
}

impl Caller {
    /// The daemon itself (kernel root).
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }
}

thread_local! {
    /// What this thread's kernel task currently has (None: never switched, i.e. root).
    static CURRENT: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

/// Makes the calling thread's kernel task act as `caller` for filesystem access.
pub fn become_caller(caller: &Caller) -> Result<(), Errno> {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        if current.as_ref() == Some(caller) {
            return Ok(());
        }
        // Order matters: groups and gid while the fsuid may still be 0, the uid last.
        sys::setgroups(&caller.groups)?;
        sys::setfsgid(caller.gid)?;
        sys::setfsuid(caller.uid)?;
        *current = Some(caller.clone());
        Ok(())
    })
}

/// Runs `f` with the daemon's own filesystem credentials (root, all capabilities), then
/// returns to the caller's. For work the daemon does on its own behalf, such as reopening an
/// inode from its handle (`open_by_handle_at` needs `CAP_DAC_READ_SEARCH`); never for work
/// that must be checked against the caller's permissions.
pub fn as_daemon<T>(f: impl FnOnce() -> T) -> T {
    let fsuid = CURRENT.with(|c| c.borrow().as_ref().map_or(0, |c| c.uid));
    if fsuid == 0 {
        return f();
    }
    // setfsuid cannot fail for root (euid 0); it returns the previous id.
    let _ = sys::setfsuid(0);
    let result = f();
    let _ = sys::setfsuid(fsuid);
    result
}

/// Supplementary groups of host processes, cached briefly: reading `/proc/PID/status` for
/// every request would cost more than the request.
pub struct GroupCache {
    entries: Mutex<HashMap<u32, CachedGroups>>,
}

/// When a process's groups were read, for which uid/gid, and what they were.
type CachedGroups = (Instant, u32, u32, Vec<u32>);

/// How long a process's groups are trusted. A process that changes its groups sees the
/// change after at most this long, like an NFS client's credential cache.
const GROUPS_TTL: Duration = Duration::from_secs(1);
const GROUPS_CACHE_MAX: usize = 4096;

impl Default for GroupCache {
    fn default() -> Self {
        GroupCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl GroupCache {
    /// The caller of a request from host process `pid` with ids `uid`/`gid`.
    pub fn caller(&self, pid: u32, uid: u32, gid: u32) -> Caller {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, u, g, groups)) = entries.get(&pid) {
            if now.duration_since(*at) < GROUPS_TTL && *u == uid && *g == gid {
                return Caller {
                    uid,
                    gid,
                    groups: groups.clone(),
                };
            }
        }
        // A request from the kernel itself (pid 0) or a process gone already: no extra groups.
        let groups = read_groups(pid).unwrap_or_default();
        if entries.len() >= GROUPS_CACHE_MAX {
            entries.retain(|_, (at, ..)| now.duration_since(*at) < GROUPS_TTL);
        }
        entries.insert(pid, (now, uid, gid, groups.clone()));
        Caller { uid, gid, groups }
    }
}

fn read_groups(pid: u32) -> Option<Vec<u32>> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_groups(&status))
}

/// The `Groups:` line of `/proc/PID/status`, sorted and deduplicated.
fn parse_groups(status: &str) -> Vec<u32> {
    let mut groups: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    groups.sort_unstable();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_line() {
        let status =
            "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t27 4 1000 4 \nVmPeak:\t1 kB\n";
        assert_eq!(parse_groups(status), vec![4, 27, 1000]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("Name: x\n"), Vec::<u32>::new());
    }

    #[test]
    fn own_process_groups_are_read() {
        let cache = GroupCache::default();
        let me = std::process::id();
        let c = cache.caller(me, 5, 6);
        assert_eq!((c.uid, c.gid), (5, 6));
        let again = cache.caller(me, 5, 6);
        assert_eq!(c, again);
        assert!(cache.caller(0, 1, 1).groups.is_empty());
    }
}
