//! What a line router announced and the import filter refused (see `bgp::rib::Rejection`):
//! counted by reason, and told once per prefix. A leak of a full table must neither flood
//! the log and the event log nor be lost in them: the first refusals are logged (and the
//! very first recorded as events) one by one, the rest counted, with an event each time
//! the count passes a power of ten.

use std::collections::{BTreeMap, HashSet};

use bgp::rib::Rejection;
use ipnet::IpNet;

/// Prefixes logged one by one per neighbour; beyond, only counted.
const LOG_AT_MOST: usize = 1_000;
/// Of those, the first recorded as events one by one (the event log is short and shared).
const EVENTS_AT_MOST: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct Refused {
    /// Refusals by `Rejection::label`, since the agent started.
    pub by_reason: BTreeMap<&'static str, u64>,
    told: HashSet<IpNet>,
}

/// What to tell of one UPDATE's refusals.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tell {
    /// Prefixes refused for the first time: to log.
    pub log: Vec<(IpNet, Rejection)>,
    /// Of those, the ones to record as events.
    pub events: Vec<(IpNet, Rejection)>,
    /// The count passed 100, 1,000, 10,000...: an event says so.
    pub milestone: Option<u64>,
}

impl Refused {
    /// Counts `rejected` and says what to tell of it.
    pub fn note(&mut self, rejected: &[(IpNet, Rejection)]) -> Tell {
        let before = self.total();
        let mut tell = Tell::default();
        for &(p, why) in rejected {
            *self.by_reason.entry(why.label()).or_default() += 1;
            // Our own routes coming back (FRR sends them to the AS they came from) are
            // loop detection doing its job (RFC 4271 §9.1.2), nothing to tell.
            if why == Rejection::AsLoop {
                continue;
            }
            if self.told.len() < LOG_AT_MOST && self.told.insert(p) {
                if self.told.len() <= EVENTS_AT_MOST {
                    tell.events.push((p, why));
                }
                tell.log.push((p, why));
            }
        }
        let after = self.total();
        let mut decade = 100;
        while decade <= after {
            if before < decade {
                tell.milestone = Some(after);
            }
            decade = decade.saturating_mul(10);
        }
        tell
    }

    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    /// "too-specific 2, outside-site 1", most first.
    pub fn summary(&self) -> String {
        let mut v: Vec<(&str, u64)> = self.by_reason.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn each_prefix_is_told_once_and_every_refusal_counted() {
        let mut r = Refused::default();
        let more_specific = (net("198.18.1.0/25"), Rejection::TooSpecific);
        let default = (net("0.0.0.0/0"), Rejection::DefaultRoute);
        let t = r.note(&[more_specific, default]);
        assert_eq!(t.log, [more_specific, default]);
        assert_eq!(t.events, t.log);
        assert_eq!(t.milestone, None);
        // Announced again (a refresh, a flap): counted, not told.
        assert_eq!(r.note(&[more_specific]), Tell::default());
        assert_eq!(r.total(), 3);
        assert_eq!(r.summary(), "too-specific 2, default-route 1");
    }

    #[test]
    fn our_own_routes_coming_back_are_counted_not_told() {
        let mut r = Refused::default();
        let t = r.note(&[(net("198.18.1.0/24"), Rejection::AsLoop)]);
        assert_eq!(t, Tell::default());
        assert_eq!(r.by_reason["as-loop"], 1);
    }

    #[test]
    fn a_leaked_table_is_told_up_to_a_bound_and_counted_whole() {
        let mut r = Refused::default();
        let leak: Vec<(IpNet, Rejection)> = (0..5_000u32)
            .map(|i| {
                let p = IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24);
                (p.unwrap(), Rejection::OutsideSite)
            })
            .collect();
        let t = r.note(&leak[..50]);
        assert_eq!(
            (t.log.len(), t.events.len(), t.milestone),
            (50, EVENTS_AT_MOST, None)
        );
        let t = r.note(&leak[50..]);
        assert_eq!(t.log.len(), LOG_AT_MOST - 50);
        assert!(t.events.is_empty());
        assert_eq!(t.milestone, Some(5_000), "past 100 and 1,000");
        assert_eq!(r.by_reason["outside-site"], 5_000);
    }
}
