//! A tunnel's WireGuard sessions carried from one run of the agent to the next, in a
//! memfd that systemd's file-descriptor store (or a re-exec) keeps meanwhile, so the
//! peer's packets sealed for the old run open in the new one and no handshake is needed
//! (see `noise::Peer::export`). The file holds keys: it has no path, is reachable only
//! through the descriptor, and is erased from this process's memory once read.
//!
//! It is taken at most once. The next run wipes the file (the content is shared by every
//! descriptor of it, the store's too) before it uses the keys, and refuses them when it
//! cannot: were the same sessions taken up twice, their sending counters would repeat,
//! and a ChaCha20-Poly1305 nonce used twice gives the plaintexts away. The file is sealed
//! against growing, which also marks it as one of ours.
//!
//! Layout: CLOCK_MONOTONIC at the export in nanoseconds (u64, little-endian: the clock
//! `Instant` reads, the same for every process of one boot), then the peer's export.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::time::{clock_gettime, ClockId};
use zeroize::Zeroizing;

use crate::noise::{self, Peer};

const MAX: usize = 8 + noise::HANDOVER_MAX_LEN;

fn monotonic_nanos() -> io::Result<u64> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(io::Error::from)?;
    Ok(u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX))
}

/// Writes `peer`'s sessions to a new memfd. Nothing may be sealed with them after this
/// (the tunnel's tasks are stopped first).
pub(crate) fn write(peer: &Peer, interface: &str) -> io::Result<OwnedFd> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX));
    bytes.extend_from_slice(&monotonic_nanos()?.to_le_bytes());
    bytes.extend_from_slice(&peer.export(Instant::now()));
    let fd = memfd_create(
        format!("crosslink-wg-{interface}").as_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(&bytes)?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL),
    )
    .map_err(io::Error::from)?;
    Ok(OwnedFd::from(file))
}

/// Reads what `write` left and wipes the file, so no other run can take it again; an
/// error when it cannot be wiped (or is not one of ours).
pub(crate) fn take(fd: OwnedFd) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut file = File::from(fd);
    let seals = fcntl(&file, FcntlArg::F_GET_SEALS).map_err(io::Error::from)?;
    if !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_GROW) {
        return Err(io::Error::other("not a tunnel handover (unsealed)"));
    }
    file.rewind()?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX));
    (&mut file).take(MAX as u64).read_to_end(&mut bytes)?;
    if bytes.is_empty() {
        return Err(io::Error::other("already taken by an earlier run"));
    }
    file.write_all_at(&vec![0; bytes.len()], 0)?;
    file.set_len(0)?;
    file.sync_all()?;
    Ok(bytes)
}

/// Gives `peer` the sessions `state` holds, aged by the time since they were written.
pub(crate) fn take_up(peer: &mut Peer, state: &[u8], now: Instant) -> io::Result<()> {
    let (stamp, export) = state
        .split_first_chunk::<8>()
        .ok_or_else(|| io::Error::other("the handover is empty"))?;
    let away = Duration::from_nanos(monotonic_nanos()?.saturating_sub(u64::from_le_bytes(*stamp)));
    peer.import(export, now, away).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::Config;

    fn peer(now: Instant) -> Peer {
        let peer_key = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([2; 32]));
        Peer::new(
            &Config {
                private_key: [1; 32],
                peer_public_key: peer_key.to_bytes(),
                preshared_key: None,
                persistent_keepalive: None,
                mtu: 1420,
            },
            now,
        )
        .expect("peer")
    }

    #[test]
    fn a_handover_is_taken_once() {
        let now = Instant::now();
        let fd = write(&peer(now), "t1").expect("written");
        let again = fd
            .try_clone()
            .expect("a second descriptor, as the store keeps one");
        let bytes = take(fd).expect("read");
        assert!(bytes.len() > 8);
        let mut p = peer(now);
        take_up(&mut p, &bytes, now).expect("taken up");
        assert!(!p.has_session(now), "none to take");
        assert!(take_up(&mut p, &bytes[..4], now).is_err());
        let err = take(again).expect_err("the same file twice");
        assert!(err.to_string().contains("already taken"), "{err}");
    }

    #[test]
    fn a_file_not_ours_is_refused() {
        let fd = memfd_create("other", MFdFlags::MFD_CLOEXEC).expect("memfd");
        let mut f = File::from(fd);
        f.write_all(b"XLWG").expect("written");
        assert!(take(OwnedFd::from(f)).is_err());
    }
}
