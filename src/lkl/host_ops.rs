//! The host services the kernel calls: one `extern "C"` function per member of
//! `struct lkl_host_ops` (`kernel/arch/lklrs/include/uapi/asm/host_ops.h`), collected in the
//! static table [`HOST_OPS`] that `boot` hands to `lkl_start_kernel`.
//!
//! Rules for every callback here:
//! - thin: convert the C arguments, call safe Rust (`console`, `sync`, `timer`, `mmio`),
//!   convert the result back;
//! - never unwind into kernel frames: nothing here unwraps, and an impossible state is logged
//!   and ends the process with `std::process::abort()` (an escaping panic would abort too,
//!   since Rust 1.81, but without saying why);
//! - host objects (semaphores, mutexes, TLS keys, timers) are boxed and handed to the kernel
//!   as opaque pointers; the matching `*_free` op drops the box.
//!
//! Thread handles: `thread_create` returns the new thread's `pthread_t`, the same value that
//! `thread_self` returns when called on that thread, so the kernel may compare a handle from
//! either op with the other. `thread_join` only accepts handles from `thread_create`.

#![allow(clippy::unnecessary_cast)] // C integer types differ between targets and bindgen options

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_ulong, c_ulonglong, c_void, CStr};
use std::os::unix::thread::JoinHandleExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::bindings as b;
use super::console;
use super::mmio;
use super::sync::{HostMutex, Semaphore};
use super::timer::{TimerId, TimerService};

/// The table passed to `lkl_start_kernel`; it lives for the whole process, as the kernel
/// requires.
pub(crate) static HOST_OPS: b::lkl_host_ops = b::lkl_host_ops {
    print: Some(lklfuse_host_print),
    panic: Some(lklfuse_host_panic),
    sem_alloc: Some(lklfuse_host_sem_alloc),
    sem_free: Some(lklfuse_host_sem_free),
    sem_up: Some(lklfuse_host_sem_up),
    sem_down: Some(lklfuse_host_sem_down),
    mutex_alloc: Some(lklfuse_host_mutex_alloc),
    mutex_free: Some(lklfuse_host_mutex_free),
    mutex_lock: Some(lklfuse_host_mutex_lock),
    mutex_unlock: Some(lklfuse_host_mutex_unlock),
    thread_create: Some(lklfuse_host_thread_create),
    thread_join: Some(lklfuse_host_thread_join),
    thread_self: Some(lklfuse_host_thread_self),
    tls_alloc: Some(lklfuse_host_tls_alloc),
    tls_set: Some(lklfuse_host_tls_set),
    tls_get: Some(lklfuse_host_tls_get),
    mem_alloc: Some(lklfuse_host_mem_alloc),
    mem_free: Some(lklfuse_host_mem_free),
    monotonic_ns: Some(lklfuse_host_monotonic_ns),
    realtime_ns: Some(lklfuse_host_realtime_ns),
    timer_alloc: Some(lklfuse_host_timer_alloc),
    timer_set_oneshot: Some(lklfuse_host_timer_set_oneshot),
    timer_cancel: Some(lklfuse_host_timer_cancel),
    timer_free: Some(lklfuse_host_timer_free),
    iomem_access: Some(lklfuse_host_iomem_access),
    memcpy: Some(lklfuse_host_memcpy),
    memset: Some(lklfuse_host_memset),
    memmove: Some(lklfuse_host_memmove),
};

/// Logs an impossible state and ends the process without unwinding.
fn fatal(what: &str) -> ! {
    tracing::error!("fatal host-op error: {what}");
    std::process::abort()
}

/// A pointer the kernel gives us only to hand back to its own function on another thread.
struct KernelPtr(*mut c_void);

// SAFETY: the kernel owns the pointee and is responsible for its thread safety; the host only
// carries the pointer to another thread and passes it back to the kernel's own callback,
// which is exactly what the thread_create/timer_alloc contract allows.
unsafe impl Send for KernelPtr {}
// SAFETY: as above; the host never dereferences it.
unsafe impl Sync for KernelPtr {}

impl KernelPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(&self) -> *mut c_void {
        self.0
    }
}

type KernelFn = unsafe extern "C" fn(*mut c_void);

// ---------------------------------------------------------------------------------------------
// Console and panic

/// `print`: console output, fed to the record parser.
///
/// # Safety
/// `s` must be null or valid for reading `len` bytes.
unsafe extern "C" fn lklfuse_host_print(s: *const c_char, len: c_int) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    if s.is_null() || len == 0 {
        return;
    }
    // SAFETY: the caller passes `len` readable bytes at `s`.
    let bytes = unsafe { std::slice::from_raw_parts(s.cast::<u8>(), len) };
    console::write(bytes);
}

type PanicHook = Box<dyn Fn(&str) + Send + Sync>;

static PANIC_HOOK: RwLock<Option<PanicHook>> = RwLock::new(None);

/// Registers a function to run when the kernel panics, after the panic is logged and just
/// before the process aborts (e.g. to unmount FUSE so the mount point does not hang). Replaces
/// any earlier hook. The hook runs on the panicking kernel thread and must not call into the
/// kernel.
pub fn set_panic_hook(hook: Box<dyn Fn(&str) + Send + Sync>) {
    *PANIC_HOOK.write().unwrap_or_else(PoisonError::into_inner) = Some(hook);
}

/// Logs a kernel panic and runs the panic hook, if any; returns so the caller can abort.
fn report_panic(msg: &str) {
    tracing::error!(target: "kernel", "kernel panic: {msg}");
    let hook = PANIC_HOOK.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(hook) = hook.as_ref() {
        if catch_unwind(AssertUnwindSafe(|| hook(msg))).is_err() {
            tracing::error!("the kernel panic hook panicked");
        }
    }
}

/// `panic`: the kernel cannot continue. Never returns.
///
/// # Safety
/// `msg` must be null or a NUL-terminated string.
unsafe extern "C" fn lklfuse_host_panic(msg: *const c_char) {
    let msg = if msg.is_null() {
        "(no message)".into()
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(msg) }.to_string_lossy()
    };
    report_panic(&msg);
    std::process::abort();
}

// ---------------------------------------------------------------------------------------------
// Semaphores and mutexes

extern "C" fn lklfuse_host_sem_alloc(count: c_int) -> *mut b::lkl_sem {
    let count = u64::try_from(count).unwrap_or(0);
    Box::into_raw(Box::new(Semaphore::new(count))).cast()
}

/// Borrows the semaphore behind a pointer from `sem_alloc`.
///
/// # Safety
/// `sem` must come from `sem_alloc` and not be freed yet.
unsafe fn sem<'a>(sem: *mut b::lkl_sem) -> &'a Semaphore {
    if sem.is_null() {
        fatal("null semaphore");
    }
    // SAFETY: per the contract, `sem` is a live `Box<Semaphore>` from `sem_alloc`.
    unsafe { &*sem.cast::<Semaphore>() }
}

/// # Safety
/// `s` must come from `sem_alloc`; nobody may use it afterwards.
unsafe extern "C" fn lklfuse_host_sem_free(s: *mut b::lkl_sem) {
    if !s.is_null() {
        // SAFETY: `s` is a `Box<Semaphore>` from `sem_alloc`, freed exactly once.
        drop(unsafe { Box::from_raw(s.cast::<Semaphore>()) });
    }
}

/// # Safety
/// `s` must come from `sem_alloc` and be live.
unsafe extern "C" fn lklfuse_host_sem_up(s: *mut b::lkl_sem) {
    // SAFETY: forwarded caller contract.
    unsafe { sem(s) }.up();
}

/// # Safety
/// `s` must come from `sem_alloc` and be live.
unsafe extern "C" fn lklfuse_host_sem_down(s: *mut b::lkl_sem) {
    // SAFETY: forwarded caller contract.
    unsafe { sem(s) }.down();
}

extern "C" fn lklfuse_host_mutex_alloc() -> *mut b::lkl_mutex {
    Box::into_raw(Box::new(HostMutex::new())).cast()
}

/// Borrows the mutex behind a pointer from `mutex_alloc`.
///
/// # Safety
/// `m` must come from `mutex_alloc` and not be freed yet.
unsafe fn mutex<'a>(m: *mut b::lkl_mutex) -> &'a HostMutex {
    if m.is_null() {
        fatal("null mutex");
    }
    // SAFETY: per the contract, `m` is a live `Box<HostMutex>` from `mutex_alloc`.
    unsafe { &*m.cast::<HostMutex>() }
}

/// # Safety
/// `m` must come from `mutex_alloc`; nobody may use it afterwards.
unsafe extern "C" fn lklfuse_host_mutex_free(m: *mut b::lkl_mutex) {
    if !m.is_null() {
        // SAFETY: `m` is a `Box<HostMutex>` from `mutex_alloc`, freed exactly once.
        drop(unsafe { Box::from_raw(m.cast::<HostMutex>()) });
    }
}

/// # Safety
/// `m` must come from `mutex_alloc` and be live.
unsafe extern "C" fn lklfuse_host_mutex_lock(m: *mut b::lkl_mutex) {
    // SAFETY: forwarded caller contract.
    unsafe { mutex(m) }.lock();
}

/// # Safety
/// `m` must come from `mutex_alloc` and be live.
unsafe extern "C" fn lklfuse_host_mutex_unlock(m: *mut b::lkl_mutex) {
    // SAFETY: forwarded caller contract.
    unsafe { mutex(m) }.unlock();
}

// ---------------------------------------------------------------------------------------------
// Threads

/// Stack size of kernel threads. Kernel code expects small stacks; 1 MiB leaves room for the
/// host functions (libc, tracing) that run on them.
const KTHREAD_STACK: usize = 1 << 20;

/// Threads from `thread_create` that have not been joined, by handle (`pthread_t`).
static THREADS: LazyLock<Mutex<HashMap<u64, JoinHandle<()>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static THREAD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Starts a named host thread running `f(arg)`; returns its `pthread_t` handle.
fn spawn_kthread(f: KernelFn, arg: KernelPtr) -> Option<u64> {
    let n = THREAD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name(format!("lkl-kthread-{n}"))
        .stack_size(KTHREAD_STACK)
        .spawn(move || {
            // SAFETY: `f` and `arg` come together from the kernel's thread_create call, which
            // asks for exactly this call on a new thread.
            unsafe { f(arg.get()) }
        });
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot start a kernel thread: {e}");
            return None;
        }
    };
    let id = handle.as_pthread_t() as u64;
    // The kernel may join as soon as we return, so register before returning.
    THREADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, handle);
    Some(id)
}

/// # Safety
/// `f` must be safe to call with `arg` on another thread.
unsafe extern "C" fn lklfuse_host_thread_create(
    f: Option<KernelFn>,
    arg: *mut c_void,
) -> b::lkl_thread_t {
    let Some(f) = f else {
        tracing::error!("kernel asked for a thread without a function");
        return 0;
    };
    spawn_kthread(f, KernelPtr(arg)).map_or(0, |id| id as b::lkl_thread_t)
}

/// Waits for a thread from `thread_create`; `-1` for an unknown handle or the caller itself.
fn join_kthread(id: u64) -> c_int {
    if id == current_thread() {
        tracing::error!("kernel thread tried to join itself");
        return -1;
    }
    let handle = THREADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    match handle.map(JoinHandle::join) {
        Some(Ok(())) => 0,
        Some(Err(_)) => {
            tracing::error!("kernel thread panicked");
            -1
        }
        None => {
            tracing::error!(thread = id, "kernel joined an unknown thread");
            -1
        }
    }
}

extern "C" fn lklfuse_host_thread_join(thread: b::lkl_thread_t) -> c_int {
    join_kthread(thread as u64)
}

fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as u64 }
}

extern "C" fn lklfuse_host_thread_self() -> b::lkl_thread_t {
    current_thread() as b::lkl_thread_t
}

// ---------------------------------------------------------------------------------------------
// Thread-specific data

/// `tls_alloc`: a pthread key whose destructor runs (and may call into the kernel) when a
/// thread that set a value exits. Rust `thread_local!` is not used: its destructor order
/// relative to other thread-exit work is not something the kernel can rely on.
extern "C" fn lklfuse_host_tls_alloc(destructor: Option<KernelFn>) -> *mut b::lkl_tls_key {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is writable; `destructor` is the kernel's, called by libc with the value
    // the kernel stored, as pthread_key_create specifies.
    let rc = unsafe { libc::pthread_key_create(&mut key, destructor) };
    if rc != 0 {
        tracing::error!(
            "pthread_key_create failed: {}",
            std::io::Error::from_raw_os_error(rc)
        );
        return std::ptr::null_mut();
    }
    Box::into_raw(Box::new(key)).cast()
}

/// Reads the pthread key behind a pointer from `tls_alloc`.
///
/// # Safety
/// `key` must come from `tls_alloc`.
unsafe fn tls_key(key: *mut b::lkl_tls_key) -> libc::pthread_key_t {
    if key.is_null() {
        fatal("null TLS key");
    }
    // SAFETY: per the contract, `key` is a live `Box<pthread_key_t>` (never freed).
    unsafe { *key.cast::<libc::pthread_key_t>() }
}

/// # Safety
/// `key` must come from `tls_alloc`.
unsafe extern "C" fn lklfuse_host_tls_set(key: *mut b::lkl_tls_key, data: *mut c_void) -> c_int {
    // SAFETY: forwarded caller contract; pthread_setspecific only stores the pointer.
    let rc = unsafe { libc::pthread_setspecific(tls_key(key), data) };
    -rc
}

/// # Safety
/// `key` must come from `tls_alloc`.
unsafe extern "C" fn lklfuse_host_tls_get(key: *mut b::lkl_tls_key) -> *mut c_void {
    // SAFETY: forwarded caller contract; the key was created by pthread_key_create.
    unsafe { libc::pthread_getspecific(tls_key(key)) }
}

// ---------------------------------------------------------------------------------------------
// Memory

/// Kernel RAM as `(start, len)`: the first block `mem_alloc` handed out. The kernel asks for
/// exactly one block, its RAM, at boot (`kernel/arch/lklrs/kernel/mem.c`). Once recorded the
/// block stays mapped for the rest of the process (`mem_free` refuses it), so device models
/// may keep addresses inside it.
static KERNEL_RAM: OnceLock<(usize, usize)> = OnceLock::new();

/// The kernel's RAM: host addresses the kernel uses as its physical (and virtual) addresses,
/// e.g. in virtio descriptors. `None` before the kernel allocated it at boot. The range stays
/// mapped until the process exits, even after halt.
pub fn kernel_ram() -> Option<std::ops::Range<usize>> {
    KERNEL_RAM.get().map(|&(start, len)| start..start + len)
}

/// `mem_alloc`: page-aligned, zero-filled anonymous memory (reserved lazily: pages the
/// kernel never touches cost nothing). Null on failure. The first block is recorded as the
/// kernel's RAM ([`kernel_ram`]).
extern "C" fn lklfuse_host_mem_alloc(size: c_ulong) -> *mut c_void {
    let Ok(size) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    if size == 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        tracing::error!(
            size,
            "mmap for kernel memory failed: {}",
            std::io::Error::last_os_error()
        );
        return std::ptr::null_mut();
    }
    let _ = KERNEL_RAM.set((p as usize, size));
    p
}

/// # Safety
/// `addr`/`size` must describe a block from `mem_alloc` that nothing uses any more.
unsafe extern "C" fn lklfuse_host_mem_free(addr: *mut c_void, size: c_ulong) {
    if addr.is_null() {
        return;
    }
    if KERNEL_RAM
        .get()
        .is_some_and(|&(start, _)| start == addr as usize)
    {
        // Device models may still hold addresses inside it (see KERNEL_RAM).
        tracing::warn!("not unmapping kernel RAM: it stays mapped until the process exits");
        return;
    }
    // SAFETY: per the contract the range is a mapping from mem_alloc that is no longer used.
    if unsafe { libc::munmap(addr, size as usize) } != 0 {
        tracing::error!(
            "munmap of kernel memory failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Clocks

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is writable; the clock ids used here always exist on Linux.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        fatal("clock_gettime failed");
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

extern "C" fn lklfuse_host_monotonic_ns() -> c_ulonglong {
    clock_ns(libc::CLOCK_MONOTONIC)
}

extern "C" fn lklfuse_host_realtime_ns() -> c_ulonglong {
    clock_ns(libc::CLOCK_REALTIME)
}

// ---------------------------------------------------------------------------------------------
// Timers

static TIMERS: LazyLock<TimerService> = LazyLock::new(|| TimerService::new("lkl-timer"));

/// # Safety
/// `f` must be safe to call with `arg` on the timer thread.
unsafe extern "C" fn lklfuse_host_timer_alloc(
    f: Option<KernelFn>,
    arg: *mut c_void,
) -> *mut b::lkl_timer {
    let Some(f) = f else {
        tracing::error!("kernel asked for a timer without a function");
        return std::ptr::null_mut();
    };
    let arg = KernelPtr(arg);
    let callback = Arc::new(move || {
        // SAFETY: the kernel allocated this timer with `f` and `arg` to be called on expiry
        // from a host thread.
        unsafe { f(arg.get()) }
    });
    match TIMERS.alloc(callback) {
        Some(id) => Box::into_raw(Box::new(id)).cast(),
        None => std::ptr::null_mut(),
    }
}

/// Reads the timer id behind a pointer from `timer_alloc`.
///
/// # Safety
/// `t` must come from `timer_alloc` and not be freed yet.
unsafe fn timer_id(t: *mut b::lkl_timer) -> TimerId {
    if t.is_null() {
        fatal("null timer");
    }
    // SAFETY: per the contract, `t` is a live `Box<TimerId>` from `timer_alloc`.
    unsafe { *t.cast::<TimerId>() }
}

/// # Safety
/// `t` must come from `timer_alloc` and be live.
unsafe extern "C" fn lklfuse_host_timer_set_oneshot(t: *mut b::lkl_timer, delta_ns: c_ulonglong) {
    // SAFETY: forwarded caller contract.
    let id = unsafe { timer_id(t) };
    TIMERS.set_oneshot(id, Duration::from_nanos(delta_ns));
}

/// # Safety
/// `t` must come from `timer_alloc` and be live.
unsafe extern "C" fn lklfuse_host_timer_cancel(t: *mut b::lkl_timer) {
    // SAFETY: forwarded caller contract.
    let id = unsafe { timer_id(t) };
    TIMERS.cancel(id);
}

/// # Safety
/// `t` must come from `timer_alloc`; nobody may use it afterwards.
unsafe extern "C" fn lklfuse_host_timer_free(t: *mut b::lkl_timer) {
    if t.is_null() {
        return;
    }
    // SAFETY: `t` is a `Box<TimerId>` from `timer_alloc`, freed exactly once.
    let id = *unsafe { Box::from_raw(t.cast::<TimerId>()) };
    TIMERS.free(id);
}

// ---------------------------------------------------------------------------------------------
// Device memory

/// `iomem_access`: one 1/2/4/8-byte access to an emulated device; 0 or `-errno`.
///
/// # Safety
/// `val` must be valid for reading and writing `size` bytes.
unsafe extern "C" fn lklfuse_host_iomem_access(
    addr: c_ulong,
    val: *mut c_void,
    size: c_int,
    write: c_int,
) -> c_int {
    let len = match size {
        1 | 2 | 4 | 8 => size as usize,
        _ => return -libc::EINVAL,
    };
    if val.is_null() {
        return -libc::EFAULT;
    }
    // SAFETY: the caller passes `size` readable and writable bytes at `val`.
    let data = unsafe { std::slice::from_raw_parts_mut(val.cast::<u8>(), len) };
    match mmio::iomem_access(addr as u64, data, write != 0) {
        Ok(()) => 0,
        Err(e) => -e.raw(),
    }
}

// ---------------------------------------------------------------------------------------------
// Memory copies (the kernel's own are byte loops)

/// # Safety
/// As C `memcpy`.
unsafe extern "C" fn lklfuse_host_memcpy(
    dst: *mut c_void,
    src: *const c_void,
    n: c_ulong,
) -> *mut c_void {
    // SAFETY: the kernel calls this with memcpy's own contract.
    unsafe { libc::memcpy(dst, src, n as usize) }
}

/// # Safety
/// As C `memset`.
unsafe extern "C" fn lklfuse_host_memset(dst: *mut c_void, c: c_int, n: c_ulong) -> *mut c_void {
    // SAFETY: the kernel calls this with memset's own contract.
    unsafe { libc::memset(dst, c, n as usize) }
}

/// # Safety
/// As C `memmove`.
unsafe extern "C" fn lklfuse_host_memmove(
    dst: *mut c_void,
    src: *const c_void,
    n: c_ulong,
) -> *mut c_void {
    // SAFETY: the kernel calls this with memmove's own contract.
    unsafe { libc::memmove(dst, src, n as usize) }
}

#[cfg(test)]
mod tests {
    //! The ops exercised through the table, as the kernel would call them.

    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    fn ops() -> &'static b::lkl_host_ops {
        &HOST_OPS
    }

    macro_rules! op {
        ($name:ident) => {
            ops()
                .$name
                .unwrap_or_else(|| panic!(concat!(stringify!($name), " is unset")))
        };
    }

    #[test]
    fn every_op_is_set() {
        let o = ops();
        assert!(o.print.is_some() && o.panic.is_some());
        assert!(o.sem_alloc.is_some() && o.sem_free.is_some());
        assert!(o.sem_up.is_some() && o.sem_down.is_some());
        assert!(o.mutex_alloc.is_some() && o.mutex_free.is_some());
        assert!(o.mutex_lock.is_some() && o.mutex_unlock.is_some());
        assert!(o.thread_create.is_some() && o.thread_join.is_some());
        assert!(o.thread_self.is_some());
        assert!(o.tls_alloc.is_some() && o.tls_set.is_some() && o.tls_get.is_some());
        assert!(o.mem_alloc.is_some() && o.mem_free.is_some());
        assert!(o.monotonic_ns.is_some() && o.realtime_ns.is_some());
        assert!(o.timer_alloc.is_some() && o.timer_set_oneshot.is_some());
        assert!(o.timer_cancel.is_some() && o.timer_free.is_some());
        assert!(o.iomem_access.is_some());
        assert!(o.memcpy.is_some() && o.memset.is_some() && o.memmove.is_some());
    }

    #[test]
    fn semaphore_through_the_table() {
        // SAFETY: the pointer comes from sem_alloc and is freed once, after both threads
        // are done with it.
        unsafe {
            let s = op!(sem_alloc)(0);
            let sp = KernelPtr(s.cast());
            let t = std::thread::spawn(move || {
                let s = sp.get().cast::<b::lkl_sem>();
                op!(sem_up)(s);
            });
            op!(sem_down)(s);
            t.join().expect("upper");
            op!(sem_free)(s);
        }
    }

    #[test]
    fn mutex_through_the_table() {
        // SAFETY: the pointer comes from mutex_alloc and is freed once, unlocked.
        unsafe {
            let m = op!(mutex_alloc)();
            op!(mutex_lock)(m);
            op!(mutex_unlock)(m);
            op!(mutex_lock)(m);
            op!(mutex_unlock)(m);
            op!(mutex_free)(m);
        }
    }

    static THREAD_RUNS: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn record_self(arg: *mut c_void) {
        THREAD_RUNS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the test passes a pointer to a live AtomicU64.
        let slot = unsafe { &*arg.cast::<AtomicU64>() };
        slot.store(current_thread(), Ordering::SeqCst);
        let name = std::thread::current().name().map(str::to_owned);
        assert!(name.is_some_and(|n| n.starts_with("lkl-kthread-")));
    }

    #[test]
    fn thread_create_join_and_self() {
        let seen = AtomicU64::new(0);
        // SAFETY: `seen` outlives the thread, which is joined before it goes out of scope.
        unsafe {
            let h = op!(thread_create)(
                Some(record_self),
                (&seen as *const AtomicU64).cast_mut().cast(),
            );
            assert_ne!(h, 0);
            assert_eq!(op!(thread_join)(h), 0);
            // The handle equals what thread_self returned on that thread.
            assert_eq!(seen.load(Ordering::SeqCst), h as u64);
            // Joined handles are gone; a second join fails instead of hanging.
            assert_eq!(op!(thread_join)(h), -1);
            assert_eq!(op!(thread_join)(op!(thread_self)()), -1);
            assert_eq!(op!(thread_create)(None, std::ptr::null_mut()), 0);
        }
        assert!(THREAD_RUNS.load(Ordering::SeqCst) >= 1);
        // SAFETY: thread_self has no preconditions.
        assert_eq!(unsafe { op!(thread_self)() } as u64, current_thread());
    }

    static TLS_DESTROYED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    unsafe extern "C" fn tls_destructor(value: *mut c_void) {
        TLS_DESTROYED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value as usize);
    }

    #[test]
    fn tls_values_are_per_thread_and_destroyed_at_exit() {
        // SAFETY: the key comes from tls_alloc; the stored values are plain integers that
        // the destructor only records.
        unsafe {
            let key = op!(tls_alloc)(Some(tls_destructor));
            assert!(!key.is_null());
            assert!(op!(tls_get)(key).is_null());
            assert_eq!(op!(tls_set)(key, 0x1000 as *mut c_void), 0);
            assert_eq!(op!(tls_get)(key) as usize, 0x1000);
            let kp = KernelPtr(key.cast());
            let t = std::thread::spawn(move || {
                let key = kp.get().cast::<b::lkl_tls_key>();
                assert!(op!(tls_get)(key).is_null());
                assert_eq!(op!(tls_set)(key, 0x2000 as *mut c_void), 0);
            });
            t.join().expect("tls thread");
            assert_eq!(op!(tls_get)(key) as usize, 0x1000);
            assert_eq!(op!(tls_set)(key, std::ptr::null_mut()), 0);
        }
        let destroyed = TLS_DESTROYED.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(*destroyed, [0x2000]);
    }

    #[test]
    fn memory_is_page_aligned_and_zeroed() {
        let size: c_ulong = 4 << 20;
        // SAFETY: the block comes from mem_alloc, is used within its size and freed once.
        unsafe {
            let p = op!(mem_alloc)(size);
            assert!(!p.is_null());
            assert_eq!(p as usize % 4096, 0);
            let bytes = std::slice::from_raw_parts_mut(p.cast::<u8>(), size as usize);
            assert!(bytes.iter().step_by(4096).all(|&b| b == 0));
            assert_eq!(bytes[size as usize - 1], 0);
            bytes[100] = 7;
            let q = op!(mem_alloc)(8192);
            op!(memcpy)(q, p, 8192);
            assert_eq!(*q.cast::<u8>().add(100), 7);
            op!(memset)(q, 0xab, 8192);
            assert_eq!(*q.cast::<u8>().add(8191), 0xab);
            op!(memmove)(p.cast::<u8>().add(1).cast(), p, 20000);
            assert_eq!((bytes[100], bytes[101]), (0, 7));
            op!(mem_free)(q, 8192);
            op!(mem_free)(p, size);
            assert!(op!(mem_alloc)(0).is_null());
        }
    }

    #[test]
    fn clocks_agree_with_the_host() {
        // SAFETY: the clock ops have no preconditions.
        let (mono, mono2, real) =
            unsafe { (op!(monotonic_ns)(), op!(monotonic_ns)(), op!(realtime_ns)()) };
        assert!(mono2 >= mono);
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        assert!(host.abs_diff(real) < 1_000_000_000);
    }

    unsafe extern "C" fn timer_fired(arg: *mut c_void) {
        // SAFETY: the test passes a pointer to a Mutex<Sender> that outlives the timer.
        let tx = unsafe { &*arg.cast::<Mutex<mpsc::Sender<()>>>() };
        let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(());
    }

    #[test]
    fn timer_through_the_table() {
        let (tx, rx) = mpsc::channel();
        let tx = Box::new(Mutex::new(tx));
        let arg = (&*tx as *const Mutex<mpsc::Sender<()>>).cast_mut().cast();
        // SAFETY: the timer is freed before `tx` is dropped, and no callback is running then
        // (the only one has already been received).
        unsafe {
            let t = op!(timer_alloc)(Some(timer_fired), arg);
            assert!(!t.is_null());
            op!(timer_set_oneshot)(t, 2_000_000);
            rx.recv_timeout(Duration::from_secs(2))
                .expect("timer fired");
            op!(timer_set_oneshot)(t, 100_000_000);
            op!(timer_cancel)(t);
            assert!(rx.recv_timeout(Duration::from_millis(150)).is_err());
            op!(timer_free)(t);
        }
        drop(tx);
    }

    #[test]
    fn iomem_access_validates_arguments() {
        let mut v = 0u32;
        // SAFETY: `v` is a writable 4-byte value; the other calls are rejected before use.
        unsafe {
            let p = (&mut v as *mut u32).cast();
            assert_eq!(op!(iomem_access)(0x1000, p, 4, 0), -libc::EFAULT);
            assert_eq!(op!(iomem_access)(0x1000, p, 3, 0), -libc::EINVAL);
            assert_eq!(
                op!(iomem_access)(0x1000, std::ptr::null_mut(), 4, 1),
                -libc::EFAULT
            );
        }
    }

    #[test]
    fn print_accepts_split_records() {
        // SAFETY: each pointer/length pair describes a live byte string.
        unsafe {
            let a = b"6,1,0,-;hello ";
            let b2 = b"world\n";
            op!(print)(a.as_ptr().cast(), a.len() as c_int);
            op!(print)(b2.as_ptr().cast(), b2.len() as c_int);
            op!(print)(std::ptr::null(), 5);
            op!(print)(a.as_ptr().cast(), -1);
        }
    }

    #[test]
    fn panic_hook_is_called() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        set_panic_hook(Box::new(move |msg| {
            let _ = tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(msg.to_owned());
        }));
        // The op itself aborts; test the part before the abort.
        report_panic("VFS: unable to mount root");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).as_deref(),
            Ok("VFS: unable to mount root")
        );
        set_panic_hook(Box::new(|_| panic!("hooks may panic")));
        report_panic("second");
        *PANIC_HOOK.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
