//! Stop requests: SIGTERM, SIGINT and SIGHUP, as libfuse's `fuse_set_signal_handlers`;
//! SIGUSR1 asks for a statistics line in the log.
//!
//! The handler itself only wakes a dedicated thread (`lklfuse-signal`, through signal-hook's
//! self-pipe); the stop action runs there as ordinary code, so it may lock, log and unmount.
//! The first stop signal runs it; later ones are logged and ignored, so an impatient second
//! Ctrl-C cannot interrupt the unmount that writes the journal back. SIGPIPE is ignored:
//! a reader going away must become an `EPIPE` error, not kill the daemon.

use std::io;
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::backend::Handle;
use signal_hook::iterator::Signals;

/// The signals that ask the daemon to unmount and exit.
pub const STOP_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

/// Keeps a signal thread running; dropping it closes the signal iterator so the
/// thread ends (without waiting for a stop action that is already running).
#[derive(Debug)]
pub struct SignalThread {
    handle: Handle,
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Runs `stop(signal)` on a dedicated thread when the first of SIGTERM, SIGINT or SIGHUP
/// arrives, and ignores SIGPIPE from now on.
///
/// # Errors
///
/// If the handlers cannot be installed or the thread cannot be started.
pub fn on_stop_signals<F>(stop: F) -> io::Result<SignalThread>
where
    F: FnOnce(i32) + Send + 'static,
{
    ignore_sigpipe()?;
    let mut signals = Signals::new(STOP_SIGNALS)?;
    let handle = signals.handle();
    thread::Builder::new()
        .name("lklfuse-signal".to_owned())
        .spawn(move || {
            let mut stop = Some(stop);
            for signal in signals.forever() {
                let name = signal_hook::low_level::signal_name(signal).unwrap_or("signal");
                match stop.take() {
                    Some(stop) => {
                        tracing::info!("received {name}, unmounting");
                        stop(signal);
                    }
                    None => tracing::warn!("received {name} while already stopping; ignored"),
                }
            }
        })?;
    Ok(SignalThread { handle })
}

/// Runs `report()` on a dedicated thread each time SIGUSR1 arrives (like `dd`'s progress
/// signal: a running daemon can be asked what it holds without stopping it).
///
/// # Errors
///
/// If the handler cannot be installed or the thread cannot be started.
pub fn on_stats_signal<F>(report: F) -> io::Result<SignalThread>
where
    F: Fn() + Send + 'static,
{
    let mut signals = Signals::new([SIGUSR1])?;
    let handle = signals.handle();
    thread::Builder::new()
        .name("lklfuse-stats".to_owned())
        .spawn(move || {
            for _ in signals.forever() {
                report();
            }
        })?;
    Ok(SignalThread { handle })
}

fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: installing SIG_IGN runs no code in signal context, so no handler safety rules
    // apply; it replaces a process-wide disposition that nothing else in lklfuse relies on.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    // The only test in the crate that raises a signal: handlers are process-wide.
    #[test]
    fn first_stop_signal_runs_the_action_once() {
        let (sender, receiver) = mpsc::channel();
        let stop_signals = on_stop_signals(move |signal| {
            let _ = sender.send(signal);
        })
        .expect("install stop-signal handlers");

        signal_hook::low_level::raise(SIGHUP).expect("raise SIGHUP");
        assert_eq!(
            receiver.recv_timeout(Duration::from_secs(5)),
            Ok(SIGHUP),
            "the stop action did not run"
        );

        // A second signal is ignored; the action (and its sender) is gone.
        signal_hook::low_level::raise(SIGHUP).expect("raise SIGHUP again");
        assert_eq!(
            receiver.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        drop(stop_signals);
    }
}
