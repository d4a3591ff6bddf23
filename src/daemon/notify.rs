//! systemd readiness notification (`sd_notify`), for `Type=notify` units.
//!
//! systemd passes a datagram socket in `NOTIFY_SOCKET`: a path, or an abstract-namespace name
//! written with a leading `@`. Each notification is one datagram of `KEY=VALUE` lines, such
//! as `READY=1`, `STOPPING=1` or `STATUS=mounted /srv/disk.img`.
//!
//! When lklfuse forks into the background, the notification comes from the daemon, not the
//! process systemd started; such units need `NotifyAccess=all` (or run lklfuse with `-f`).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_VAR: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1"`) to the socket in `NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when the variable is unset or empty (not started by systemd), and
/// `Ok(true)` once sent.
///
/// # Errors
///
/// If the socket address is unusable or the datagram cannot be sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_VAR) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to `socket`: a filesystem path, or `@name` for the abstract
/// namespace.
///
/// # Errors
///
/// If `socket` is empty, names an unsupported address family (systemd's `vsock:`), or the
/// datagram cannot be sent.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let address = notify_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(state.as_bytes(), &address)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("notification truncated to {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

fn notify_address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes {
        [] => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty notification socket address",
        )),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        [b'/', ..] => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "unsupported notification socket address '{}'",
                socket.to_string_lossy()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn unique_name(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("lklfuse-test-{what}-{}-{nanos}", std::process::id())
    }

    fn receive(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 256];
        let len = receiver.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..len].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(unique_name("notify"));
        std::fs::create_dir(&dir).unwrap();
        let path: PathBuf = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
        notify_to(path.as_os_str(), "STATUS=mounted\nSTOPPING=1").unwrap();
        assert_eq!(receive(&receiver), "STATUS=mounted\nSTOPPING=1");
        drop(receiver);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = unique_name("abstract");
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
    }

    #[test]
    fn rejects_unusable_addresses() {
        assert!(notify_to(OsStr::new(""), "READY=1").is_err());
        assert_eq!(
            notify_to(OsStr::new("vsock:2:1234"), "READY=1")
                .unwrap_err()
                .kind(),
            io::ErrorKind::Unsupported
        );
        let missing = std::env::temp_dir().join(unique_name("missing"));
        assert!(notify_to(missing.as_os_str(), "READY=1").is_err());
    }
}
