//! BFD and BGP with a line router bring each other up and down, BGP first, as a router
//! couples its own BGP to BFD (RFC 5882 §4.3):
//!
//! - The single-hop BFD session with a line router starts AdminDown and is admitted once
//!   the BGP session with that router is Established. It is held AdminDown again while it
//!   is not Up and BGP is not Established. Why: a router's BGP may register its BFD peer
//!   again once the session is up — FRR 8.4's bgpd does, with the session's local address
//!   instead of the wildcard it started with — which deletes a BFD session that came Up
//!   before BGP did; bgpd takes that as BFD Down and closes BGP with Cease/BFD Down, a
//!   flap on every start where BFD was quicker than BGP. Held back until then, the only
//!   session the router ever brings Up is the one it keeps.
//! - When BFD with the router goes from Up to Down (not by the router's AdminDown, which
//!   RFC 5882 §3.2 says is no failure), the BGP session with it is closed with Cease/BFD
//!   Down (RFC 9384), as the router's own BGP does on its side. Both then come back in the
//!   order above, and a router whose BGP lingers (a 90 s hold time) cannot bring a BFD
//!   session Up under a BGP session it is about to replace.
//!
//! The rules are pure functions; the engine applies them at the end of every turn
//! (`reconcile`) and on every BFD failure (`close_bgp`); the supervisor tells the BFD
//! driver and the BGP sessions what they return.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use bgp::fsm::State as BgpState;
use bgp::wire::{err, Notification};
use probes::driver::SessionId;
use probes::wire::{Diag, State};

use crate::core::events::EventKind;
use crate::state::{lock, AgentState};

/// Whether the BFD session with a router may run: BGP with it is up, or BFD already is
/// (a BGP session that drops on its own does not take a working BFD session down).
pub fn admitted(bgp_established: bool, bfd: Option<State>) -> bool {
    bgp_established || bfd == Some(State::Up)
}

/// Whether a BFD transition with a router is a failure BGP with it follows: not the
/// router saying it is administratively down (by its state; FRR 8.4 sends AdminDown with
/// no diagnostic, others with diag 7).
pub fn bfd_failed(
    from: State,
    to: State,
    remote: Option<State>,
    remote_diag: Option<Diag>,
) -> bool {
    from == State::Up
        && to == State::Down
        && remote != Some(State::AdminDown)
        && remote_diag != Some(Diag::AdministrativelyDown)
}

/// Whether a BFD failure closes the BGP session: only one that was up when BFD last
/// heard the router say Up. A router that restarts is noticed by BFD only a detection
/// time after the kill; its new BGP session can be up before that, and is not the one
/// that failed. (A BGP session that restarted under a working BFD session is older than
/// BFD's last packet, and is closed.)
pub fn closes_bgp(bgp_established_at: Option<Instant>, bfd_last_up: Option<Instant>) -> bool {
    matches!((bgp_established_at, bfd_last_up), (Some(b), Some(u)) if b <= u)
}

/// BFD with `peer` failed, last hearing it say Up at `last_up`: when the BGP session with
/// it was up then, it is recorded and the close is returned with the instant it is bound
/// by (the supervisor runs it; the session task closes only a session established before
/// it, as the agent's view trails the task).
pub fn close_bgp(
    st: &mut AgentState,
    peer: IpAddr,
    last_up: Option<Instant>,
) -> Option<(IpAddr, Instant)> {
    let n = st.bgp.get(&peer)?;
    if n.state != BgpState::Established || !closes_bgp(n.established_at, last_up) {
        return None;
    }
    let line = n.line.clone();
    let before = last_up?;
    let msg = format!(
        "BFD with {peer} went down: closing the BGP session with it (Cease/BFD Down); both come back together, BGP first"
    );
    tracing::warn!(path = %line, "{msg}");
    st.record(EventKind::BgpFollowsBfd, Some(&line), msg);
    Some((peer, before))
}

/// The close `close_bgp` asked for, on the session's own task.
pub async fn teardown(bgp: &crate::sources::bgp::Handles, peer: IpAddr, before: Instant) {
    let handle = lock(bgp)
        .iter()
        .find(|(p, _)| *p == peer)
        .map(|(_, h)| h.clone());
    if let Some(handle) = handle {
        handle
            .teardown_if_older(Notification::new(err::CEASE, err::CEASE_BFD_DOWN), before)
            .await;
    }
}

/// What each BFD session with a line router should be told, as the rules say: those whose
/// admission changed since the driver was last told (`admin`). Marks the held ones for
/// `status`.
pub fn reconcile(
    st: &mut AgentState,
    admin: &mut HashMap<SessionId, bool>,
) -> Vec<(SessionId, bool)> {
    let running: Vec<SessionId> = st
        .bfd
        .iter()
        .filter(|((_, _, end_to_end), _)| !end_to_end)
        .filter_map(|(_, v)| v.id)
        .collect();
    admin.retain(|id, _| running.contains(id));
    let mut told = Vec::new();
    let bgp = &st.bgp;
    for ((line, peer, end_to_end), view) in st.bfd.iter_mut() {
        let Some(id) = view.id.filter(|_| !end_to_end) else {
            continue;
        };
        let bgp_up = bgp
            .get(peer)
            .is_some_and(|n| n.state == BgpState::Established);
        let want = admitted(bgp_up, view.state);
        view.waiting_for_bgp = !want;
        if admin.get(&id).copied().unwrap_or(false) != want {
            admin.insert(id, want);
            told.push((id, want));
            tracing::debug!(%line, %peer, admitted = want, "BFD follows BGP");
        }
    }
    told
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bfd_runs_once_bgp_is_up_and_survives_bgp_dropping_while_up() {
        assert!(!admitted(false, None));
        assert!(!admitted(false, Some(State::AdminDown)));
        assert!(admitted(true, Some(State::AdminDown)));
        // BGP dropped on its own (hold timer): a working BFD session is kept...
        assert!(admitted(false, Some(State::Up)));
        // ... until it is down too; then it waits for BGP again.
        assert!(!admitted(false, Some(State::Down)));
        assert!(!admitted(false, Some(State::Init)));
    }

    #[test]
    fn a_bfd_failure_is_a_down_from_up_and_the_routers_admin_down_is_not() {
        assert!(bfd_failed(
            State::Up,
            State::Down,
            None,
            Some(Diag::ControlDetectionTimeExpired)
        ));
        assert!(bfd_failed(State::Up, State::Down, None, None));
        assert!(!bfd_failed(
            State::Up,
            State::Down,
            None,
            Some(Diag::AdministrativelyDown)
        ));
        assert!(!bfd_failed(State::Init, State::Down, None, None));
        assert!(!bfd_failed(State::Down, State::AdminDown, None, None));
        // FRR's AdminDown carries no diagnostic: its state says it.
        assert!(!bfd_failed(
            State::Up,
            State::Down,
            Some(State::AdminDown),
            Some(Diag::None)
        ));
    }

    #[test]
    fn only_the_bgp_session_the_failed_bfd_session_ran_under_is_closed() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        // BGP first, then BFD admitted: a failure of the line closes BGP.
        assert!(closes_bgp(Some(t), Some(t + s)));
        // The router restarted: its new BGP session came up after BFD last heard the old
        // one. That failure is not the new session's.
        assert!(!closes_bgp(Some(t + 2 * s), Some(t + s)));
        assert!(!closes_bgp(None, Some(t)));
        assert!(!closes_bgp(Some(t), None));
    }
}
