//! Outside systemd, an upgrade in place that keeps the tunnels' carrier: on SIGUSR2 the
//! agent execs the binary at the path it was started from (an upgraded file there is the
//! new version) in the same process, passing the tunnels' descriptors by number in
//! `CROSSLINK_HANDOVER` (`name=fd,…`), as nginx's binary upgrade passes its sockets.
//! Everything else closes on exec, as on SIGTERM: the kernel keeps the routes, the line
//! routers keep ours (graceful restart), and the new run adopts both (see `fdstore`).
//! Under systemd a restart does the same through the file-descriptor store.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

pub const ENV: &str = "CROSSLINK_HANDOVER";

static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Notes the binary's path at start, before an upgrade can replace the file (after that,
/// /proc/self/exe names the deleted old one).
pub fn remember_binary() {
    BINARY.get_or_init(|| std::env::current_exe().ok());
}

/// Execs the binary again with `descriptors` kept open; returns only if that failed (the
/// agent then runs on as it was).
pub fn exec(descriptors: &[(String, RawFd)]) -> io::Error {
    let Some(Some(binary)) = BINARY.get() else {
        return io::Error::other("the agent's binary path is unknown");
    };
    let (path, args, env) = match command_line(binary, descriptors) {
        Ok(line) => line,
        Err(e) => return e,
    };
    for (_, fd) in descriptors {
        if let Err(e) = set_cloexec(*fd, false) {
            restore(descriptors);
            return e.into();
        }
    }
    // The exec'ing thread's CPU set is what the new process starts from.
    crate::cpus::leave_control();
    let err = match nix::unistd::execve(&path, &args, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    restore(descriptors);
    crate::cpus::enter_control();
    io::Error::new(
        io::Error::from(err).kind(),
        format!("exec {}: {err}", binary.display()),
    )
}

/// The path, arguments and environment of the exec: this run's own, with the descriptors
/// named in `ENV` and systemd's LISTEN_* left out (they name this PID too, and the new
/// image must not take those numbers a second time).
fn command_line(
    binary: &std::path::Path,
    descriptors: &[(String, RawFd)],
) -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
    let cstring = |s: OsString| CString::new(s.into_vec()).map_err(io::Error::other);
    let path = cstring(binary.as_os_str().to_owned())?;
    let args = std::env::args_os()
        .map(cstring)
        .collect::<io::Result<_>>()?;
    let handover: Vec<String> = descriptors
        .iter()
        .map(|(name, fd)| format!("{name}={fd}"))
        .collect();
    let passed_on = |k: &OsString| {
        k != ENV
            && !["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"].contains(&k.to_str().unwrap_or(""))
    };
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| passed_on(k))
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            cstring(k)
        })
        .collect::<io::Result<_>>()?;
    env.push(cstring(format!("{ENV}={}", handover.join(",")).into())?);
    Ok((path, args, env))
}

fn restore(descriptors: &[(String, RawFd)]) {
    for (_, fd) in descriptors {
        let _ = set_cloexec(*fd, true);
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> nix::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: only the descriptor's flags change; it stays owned where it was.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags)).map(drop)
}

/// What the run before the exec passed (empty when this run was not exec'd so). Only
/// descriptors that are open are taken; each is close-on-exec again.
pub fn handed_over() -> Vec<(String, OwnedFd)> {
    let Ok(list) = std::env::var(ENV) else {
        return Vec::new();
    };
    parse(&list)
        .into_iter()
        .filter(|(_, fd)| set_cloexec(*fd, true).is_ok())
        .map(|(name, fd)| {
            #[allow(unsafe_code)]
            // SAFETY: the previous image of this process left the descriptor open for
            // exactly this and nothing else in this run knows its number.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            (name, owned)
        })
        .collect()
}

fn parse(list: &str) -> Vec<(String, RawFd)> {
    list.split(',')
        .filter_map(|item| {
            let (name, fd) = item.rsplit_once('=')?;
            let fd: RawFd = fd.parse().ok()?;
            // 0-2 are stdio, never a tunnel's.
            (fd > 2 && !name.is_empty()).then(|| (name.to_owned(), fd))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handover_list_names_descriptors_by_number() {
        assert_eq!(
            parse("tun.gwa-t1.0=7,udp.gwa-t1=9"),
            [("tun.gwa-t1.0".to_owned(), 7), ("udp.gwa-t1".to_owned(), 9)]
        );
        assert!(parse("").is_empty());
        assert!(parse("x=1,=5,y=z,tun.a.0=").is_empty());
    }
}
