//! Inputs to their written form and back (see `record`).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use bgp::driver::Event as BgpEvent;
use bgp::rib::Rejection;
use bgp::wire::Family;

use super::{BfdEvent, Clock, Rec};
use crate::supervisor::input::Input;

fn family_name(f: Family) -> String {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
    .to_owned()
}

fn family(name: &str) -> Family {
    if name == "ipv6" {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn bgp_state(name: &str) -> bgp::fsm::State {
    use bgp::fsm::State as S;
    [
        S::Idle,
        S::Connect,
        S::Active,
        S::OpenSent,
        S::OpenConfirm,
        S::Established,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
    .unwrap_or(S::Idle)
}

/// A malformed UPDATE's reason as the decoder's static text: each distinct text is kept
/// once for the replay's life (the decoder has a few dozen).
fn interned(s: &str) -> &'static str {
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = seen.get(s) {
        return s;
    }
    let s: &'static str = Box::leak(s.to_owned().into_boxed_str());
    seen.insert(s);
    s
}

fn rejection(label: &str, detail: Option<&str>) -> Rejection {
    match label {
        "first-as" => Rejection::FirstAs,
        "as-loop" => Rejection::AsLoop,
        "default-route" => Rejection::DefaultRoute,
        "outside-site" => Rejection::OutsideSite,
        "too-specific" => Rejection::TooSpecific,
        "max-prefix" => Rejection::MaxPrefix,
        "next-hop-self" => Rejection::NextHopSelf,
        _ => Rejection::Malformed(interned(detail.unwrap_or("unknown"))),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Rec {
    /// The written form of `input`.
    pub fn of(input: &Input, clock: &Clock) -> Rec {
        match input {
            Input::Link { iface, link } => Rec::Link {
                iface: iface.clone(),
                link: *link,
            },
            Input::Links { table, followed } => Rec::Links {
                table: table.clone(),
                followed: *followed,
            },
            Input::BgpNeighbor { line, peer } => Rec::BgpNeighbor {
                line: line.clone(),
                peer: *peer,
            },
            Input::BgpGone(peer) => Rec::BgpGone { peer: *peer },
            Input::Bgp(ev) => Rec::bgp(ev),
            Input::BgpPolled(s) => Rec::bgp_polled(s),
            Input::BfdSession(key, view) => Rec::BfdSession {
                key: key.clone(),
                waiting_for_bgp: view.waiting_for_bgp,
            },
            Input::BfdGone(key) => Rec::BfdGone { key: key.clone() },
            Input::BfdFollows(key, id) => Rec::BfdFollows {
                key: key.clone(),
                id: *id,
            },
            Input::Bfd(ev) => Rec::Bfd(BfdEvent::of(ev, clock)),
            Input::BfdPolled(all) => Rec::BfdPolled(all.clone()),
            Input::TunnelStarted { name, retried } => Rec::TunnelStarted {
                name: name.clone(),
                retried: *retried,
            },
            Input::TunnelFailed { name, error, told } => Rec::TunnelFailed {
                name: name.clone(),
                error: error.clone(),
                told: *told,
            },
            Input::TunnelsKept(names) => Rec::TunnelsKept(names.clone()),
            Input::TunnelStats(all) => Rec::TunnelStats(all.clone()),
            Input::Record {
                kind,
                path,
                message,
                by,
            } => Rec::Record {
                kind: *kind,
                by: by.clone(),
                path: path.clone(),
                message: message.clone(),
            },
            Input::Operator(r) => Rec::Operator {
                path: r.path.clone(),
                command: r.command.as_str().to_owned(),
                force: r.force,
                by: r.by.clone(),
                lasting_ms: r.lasting.map(|d| d.as_millis() as u64),
            },
            Input::Config(cfg, _) => Rec::Config {
                source: cfg.source.clone(),
            },
            Input::Adopted(a) => Rec::Adopted {
                members: a.members.clone(),
                carrying: a.carrying.clone(),
            },
            Input::Programmed(p) => Rec::Programmed {
                generation: p.generation,
                switched_at_us: p.switched_at.map(|t| clock.at(t)),
                repaired: p
                    .repaired
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
            },
            Input::Stall(s) => Rec::Stall {
                since_us: clock.at(s.since),
                length: s.length,
            },
        }
    }

    fn bgp_polled(s: &bgp::driver::Status) -> Rec {
        Rec::BgpPolled {
            peer: s.peer,
            state: s.state.as_str().to_owned(),
            last_error: s.last_error.clone(),
            established_for_ms: s.established_for.map(ms),
            prefixes_received: s.prefixes_received,
            prefixes_rejected: s.prefixes_rejected,
            prefixes_advertised: s.prefixes_advertised,
        }
    }

    fn bgp(ev: &BgpEvent) -> Rec {
        match ev {
            BgpEvent::Up { peer, negotiated } => Rec::BgpUp {
                peer: *peer,
                peer_asn: negotiated.peer_asn,
                hold_time: negotiated.hold_time,
                families: negotiated
                    .families
                    .iter()
                    .map(|f| family_name(*f))
                    .collect(),
                restart_time: negotiated.graceful_restart.as_ref().map(|g| g.restart_time),
            },
            BgpEvent::Down {
                peer,
                reason,
                graceful,
            } => Rec::BgpDown {
                peer: *peer,
                reason: reason.clone(),
                graceful_ms: graceful.map(ms),
            },
            BgpEvent::Routes { peer, delta } => Rec::BgpRoutes {
                peer: *peer,
                added: delta.added.clone(),
                graceful_shutdown: delta.graceful_shutdown.clone(),
                withdrawn: delta.withdrawn.clone(),
                rejected: delta
                    .rejected
                    .iter()
                    .map(|(p, why)| {
                        let detail = match why {
                            Rejection::Malformed(d) => Some((*d).to_owned()),
                            _ => None,
                        };
                        (*p, why.label().to_owned(), detail)
                    })
                    .collect(),
                over_limit: delta.over_limit,
            },
            BgpEvent::EndOfRib { peer, family } => Rec::BgpEndOfRib {
                peer: *peer,
                family: family_name(*family),
            },
        }
    }

    /// The input again; none for those the replay makes itself (an operator's command
    /// needs a reply channel, a config is parsed).
    pub fn into_input(self, clock: &Clock) -> Option<Input> {
        let rec = match self.into_bgp() {
            Ok(input) => return Some(input),
            Err(rec) => rec,
        };
        Some(match rec {
            Rec::Link { iface, link } => Input::Link { iface, link },
            Rec::Links { table, followed } => Input::Links { table, followed },
            Rec::BgpNeighbor { line, peer } => Input::BgpNeighbor { line, peer },
            Rec::BgpGone { peer } => Input::BgpGone(peer),
            Rec::BgpUp { .. }
            | Rec::BgpDown { .. }
            | Rec::BgpRoutes { .. }
            | Rec::BgpEndOfRib { .. }
            // Made by `into_bgp` above.
            | Rec::BgpPolled { .. } => return None,
            Rec::BfdSession {
                key,
                waiting_for_bgp,
            } => {
                let view = crate::sources::bfd::BfdView::recorded(&key, waiting_for_bgp);
                Input::BfdSession(key, Box::new(view))
            }
            Rec::BfdGone { key } => Input::BfdGone(key),
            Rec::BfdFollows { key, id } => Input::BfdFollows(key, id),
            Rec::Bfd(e) => Input::Bfd(e.event(clock)),
            Rec::BfdPolled(all) => Input::BfdPolled(all),
            Rec::TunnelStarted { name, retried } => Input::TunnelStarted { name, retried },
            Rec::TunnelFailed { name, error, told } => Input::TunnelFailed { name, error, told },
            Rec::TunnelsKept(names) => Input::TunnelsKept(names),
            Rec::TunnelStats(all) => Input::TunnelStats(all),
            Rec::Record {
                kind,
                path,
                message,
                by,
            } => Input::Record {
                kind,
                path,
                message,
                by,
            },
            Rec::Operator { .. } | Rec::Config { .. } => return None,
            Rec::Adopted { members, carrying } => {
                Input::Adopted(crate::routing::Adopted { members, carrying })
            }
            Rec::Programmed {
                generation,
                switched_at_us,
                repaired,
            } => Input::Programmed(crate::routing::Programmed {
                generation,
                switched_at: switched_at_us.map(|us| clock.instant(us)),
                repaired: repaired
                    .into_iter()
                    .filter_map(|(k, v)| Some((crate::routing::repair_label(&k)?, v)))
                    .collect(),
            }),
            // A stall longer than a day is no stall a record can mean (and would overflow
            // the instant it ends at).
            Rec::Stall { since_us, length } => Input::Stall(crate::stall::Stall {
                since: clock.instant(since_us),
                length: length.min(Duration::from_secs(86_400)),
            }),
        })
    }
}

impl Rec {
    /// A BGP session's input again (a poll without its message counters: they are not
    /// recorded, no decision reads them); any other record back.
    fn into_bgp(self) -> Result<Input, Rec> {
        Ok(match self {
            Rec::BgpUp {
                peer,
                peer_asn,
                hold_time,
                families,
                restart_time,
            } => Input::Bgp(BgpEvent::Up {
                peer,
                negotiated: bgp::fsm::Negotiated {
                    peer_asn,
                    peer_id: std::net::Ipv4Addr::UNSPECIFIED,
                    hold_time,
                    ctx: Default::default(),
                    families: families.iter().map(|f| family(f)).collect(),
                    route_refresh: true,
                    graceful_restart: restart_time.map(|restart_time| bgp::wire::GracefulRestart {
                        restarting: false,
                        notification: false,
                        restart_time,
                        families: Vec::new(),
                    }),
                },
            }),
            Rec::BgpDown {
                peer,
                reason,
                graceful_ms,
            } => Input::Bgp(BgpEvent::Down {
                peer,
                reason,
                graceful: graceful_ms.map(Duration::from_millis),
            }),
            Rec::BgpRoutes {
                peer,
                added,
                graceful_shutdown,
                withdrawn,
                rejected,
                over_limit,
            } => Input::Bgp(BgpEvent::Routes {
                peer,
                delta: bgp::rib::RibDelta {
                    added,
                    graceful_shutdown,
                    withdrawn,
                    rejected: rejected
                        .iter()
                        .map(|(p, label, detail)| (*p, rejection(label, detail.as_deref())))
                        .collect(),
                    over_limit,
                },
            }),
            Rec::BgpEndOfRib { peer, family: f } => Input::Bgp(BgpEvent::EndOfRib {
                peer,
                family: family(&f),
            }),
            Rec::BgpPolled {
                peer,
                state,
                last_error,
                established_for_ms,
                prefixes_received,
                prefixes_rejected,
                prefixes_advertised,
            } => Input::BgpPolled(bgp::driver::Status {
                peer,
                state: bgp_state(&state),
                last_error,
                established_for: established_for_ms.map(Duration::from_millis),
                prefixes_received,
                prefixes_rejected,
                prefixes_advertised,
                sent: Default::default(),
                received: Default::default(),
            }),
            other => return Err(other),
        })
    }
}

impl BfdEvent {
    fn of(ev: &probes::driver::Event, clock: &Clock) -> BfdEvent {
        BfdEvent {
            id: ev.id,
            name: ev.name.clone(),
            peer: ev.peer,
            from: ev.from,
            to: ev.to,
            diag: ev.diag,
            remote_diag: ev.remote_diag,
            remote_state: ev.remote_state,
            last_up_rx_us: ev.last_up_rx.map(|t| clock.at(t)),
            far_end: ev.far_end,
        }
    }

    fn event(self, clock: &Clock) -> probes::driver::Event {
        probes::driver::Event {
            id: self.id,
            name: self.name,
            peer: self.peer,
            from: self.from,
            to: self.to,
            diag: self.diag,
            remote_diag: self.remote_diag,
            remote_state: self.remote_state,
            last_up_rx: self.last_up_rx_us.map(|us| clock.instant(us)),
            far_end: self.far_end,
        }
    }
}
