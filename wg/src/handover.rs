//! A tunnel's WireGuard sessions carried from one run of the agent to the next, in a
//! sealed memfd that systemd's file-descriptor store (or a re-exec) keeps meanwhile, so
//! the peer's packets sealed for the old run open in the new one and no handshake is
//! needed (see `noise::Peer::export`). The file holds keys: it has no path, is readable
//! only through the descriptor, and is erased from this process's memory once read.
//!
//! Layout: CLOCK_MONOTONIC at the export in nanoseconds (u64, little-endian: the clock
//! `Instant` reads, the same for every process of one boot), then the peer's export.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::time::{clock_gettime, ClockId};
use zeroize::Zeroizing;

use crate::noise::Peer;

/// Larger than any export (three sessions of about 360 bytes): a file that claims more is
/// not ours.
const MAX: u64 = 4096;

fn monotonic_nanos() -> io::Result<u64> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(io::Error::from)?;
    Ok(u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX))
}

/// Writes `peer`'s sessions to a new sealed memfd. Nothing may be sealed with them after
/// this (the tunnel's tasks are stopped first).
pub(crate) fn write(peer: &Peer, interface: &str) -> io::Result<OwnedFd> {
    let now = Instant::now();
    let mut bytes = Zeroizing::new(monotonic_nanos()?.to_le_bytes().to_vec());
    bytes.extend_from_slice(&Zeroizing::new(peer.export(now)));
    let fd = memfd_create(
        format!("crosslink-wg-{interface}").as_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(&bytes)?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(io::Error::from)?;
    Ok(OwnedFd::from(file))
}

/// Reads what `write` left.
pub(crate) fn read(fd: OwnedFd) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut file = File::from(fd);
    file.rewind()?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX).read_to_end(&mut bytes)?;
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
    use std::time::SystemTime;

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
            SystemTime::now(),
        )
        .expect("peer")
    }

    #[test]
    fn a_memfd_round_trip_is_sealed_and_checked() {
        let now = Instant::now();
        let fd = write(&peer(now), "t1").expect("written");
        let mut f = File::from(fd.try_clone().expect("dup"));
        assert!(f.write_all(b"x").is_err(), "sealed against writes");
        let bytes = read(fd).expect("read");
        assert!(bytes.len() > 8);
        let mut p = peer(now);
        take_up(&mut p, &bytes, now).expect("taken up");
        assert!(!p.has_session(now), "none to take");
        assert!(take_up(&mut p, &bytes[..4], now).is_err());
    }
}
