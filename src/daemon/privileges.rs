//! A daemon started as root gives up the host privileges it does not need.
//!
//! Every file operation runs inside the in-process kernel, under the caller's credentials
//! there, so on the host the daemon only needs to mount and unmount the FUSE file system
//! (`CAP_SYS_ADMIN`) and to reach a mount point under a directory root may not search
//! (`CAP_DAC_READ_SEARCH`). The image, lock and log files are opened before the drop. What
//! remains if the daemon were subverted by a hostile image: no `CAP_DAC_OVERRIDE` (no writing
//! host files root does not own), no `CAP_CHOWN`, `CAP_SETUID`, `CAP_SYS_PTRACE`,
//! `CAP_SYS_MODULE`, ..., and `no_new_privs` so no program it runs can regain them.
//!
//! Capabilities belong to each thread, and threads inherit them when created: the drop must
//! happen while the daemon has one thread, before the kernel boots and starts its own.

use std::io;

/// Kept: mount/unmount of the FUSE file system.
const CAP_SYS_ADMIN: u32 = 21;
/// Kept: path lookup of the mount point through directories root cannot search.
const CAP_DAC_READ_SEARCH: u32 = 2;
/// The capabilities a serving root daemon keeps.
pub const KEPT: [u32; 2] = [CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN];

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether the process runs with root's effective user id.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Drops every capability but [`KEPT`] from the calling thread's effective, permitted,
/// inheritable, ambient and bounding sets, and sets `no_new_privs`. Does nothing unless the
/// process runs as root. Call it while the process is single-threaded.
///
/// # Errors
///
/// If the kernel refuses a step (the daemon then stops rather than serve with more
/// privilege than it should).
pub fn drop_unneeded() -> io::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let last = last_capability();
    for cap in 0..=last {
        if KEPT.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        // EINVAL: a capability this kernel does not know (cap_last_cap unreadable).
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers; EINVAL on kernels without ambient
    // capabilities is harmless.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut data = [CapData::default(); 2];
    for cap in KEPT {
        let slot = &mut data[(cap / 32) as usize];
        slot.effective |= 1 << (cap % 32);
        slot.permitted |= 1 << (cap % 32);
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads one header and two data structs (version 3), both live here.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_capabilities_fit_the_two_data_words() {
        assert!(KEPT.iter().all(|&cap| cap < 64));
        assert!(last_capability() >= CAP_SYS_ADMIN);
    }
}
