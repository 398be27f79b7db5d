//! Fate groups: sessions to the same far end over different paths. When one of them
//! goes down, the others tell a failed path from a far end that went quiet everywhere at
//! once (its agent killed or restarting), which a router must not take for a failure of
//! every path (RFC 5882 §4.3: a restart of a BFD that shares fate with its control plane).

use std::time::{Duration, Instant};

use crate::wire::Diag;

/// What the other sessions of a fate group say when one of them goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FarEnd {
    /// Not an Up session of a group going down, or nothing to compare with.
    Unjudged,
    /// Another session heard the far end say Up after this one should have: the path
    /// failed, the far end lives.
    Alive,
    /// No session heard the far end since this one last did: it went quiet everywhere
    /// at once (its BFD stopped, e.g. the agent was killed), which says nothing about
    /// this path.
    Silent,
    /// The far end said Down with no diagnostic: a fresh session, i.e. it restarted.
    Restarted,
}

/// Another session of the group, as a witness of the far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Witness {
    /// When it last heard the far end say Up.
    pub last_up: Option<Instant>,
    /// When it last fell from Up.
    pub down_at: Option<Instant>,
}

/// Judges an Up session's fall to Down against the rest of its fate group.
/// `heard`: when this session last heard the far end say Up, and the far end's transmit
/// interval; `others`: the other sessions of the group.
pub fn judge(
    diag: Diag,
    remote_diag: Option<Diag>,
    heard: (Option<Instant>, Duration),
    others: &[Witness],
) -> FarEnd {
    // A witness that lost the far end itself after our last packet and has heard it
    // again since may be talking to a far end that restarted meanwhile (its new agent
    // answers within our detection time), which says nothing of whether our path works.
    // What it heard before it fell still counts.
    let others: Vec<Option<Instant>> = others
        .iter()
        .map(|w| {
            let steady = w.down_at.is_none_or(|d| {
                heard.0.is_some_and(|h| d <= h) || w.last_up.is_some_and(|u| u <= d)
            });
            w.last_up.filter(|_| steady)
        })
        .collect();
    match diag {
        Diag::NeighborSignaledSessionDown if remote_diag == Some(Diag::None) => FarEnd::Restarted,
        Diag::ControlDetectionTimeExpired if !others.is_empty() => {
            // A live far end sends on every path at least once an interval: some other
            // session must have heard it after this one's next packet was due.
            let due = heard.0.map(|t| t + heard.1);
            let alive = others.iter().flatten().any(|t| due.is_none_or(|d| *t > d));
            if alive {
                FarEnd::Alive
            } else {
                FarEnd::Silent
            }
        }
        _ => FarEnd::Unjudged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Witnesses that never went down, that last heard the far end at these times.
    fn steady(last: &[Option<Instant>]) -> Vec<Witness> {
        last.iter()
            .map(|&last_up| Witness {
                last_up,
                down_at: None,
            })
            .collect()
    }

    #[test]
    fn a_far_end_heard_elsewhere_after_our_packet_was_due_is_alive() {
        let t0 = Instant::now();
        let heard = (Some(t0), 10 * MS);
        let judge_with = |others: &[Option<Instant>]| {
            judge(
                Diag::ControlDetectionTimeExpired,
                Some(Diag::None),
                heard,
                &steady(others),
            )
        };
        // Another path heard Up 25 ms after our last: the far end lives, our path failed.
        assert_eq!(judge_with(&[Some(t0 + 25 * MS)]), FarEnd::Alive);
        // Everyone went quiet within one interval of our last packet: the far end did.
        assert_eq!(
            judge_with(&[Some(t0 + 6 * MS), Some(t0 - 3 * MS)]),
            FarEnd::Silent
        );
        assert_eq!(judge_with(&[None]), FarEnd::Silent);
        // Alone in the group: nothing to compare with.
        assert_eq!(judge_with(&[]), FarEnd::Unjudged);
    }

    #[test]
    fn a_fresh_down_from_the_far_end_is_a_restart_and_other_downs_are_not_judged() {
        let heard = (Some(Instant::now()), 10 * MS);
        assert_eq!(
            judge(
                Diag::NeighborSignaledSessionDown,
                Some(Diag::None),
                heard,
                &[]
            ),
            FarEnd::Restarted
        );
        // The far end timed us out, or went AdminDown: it speaks, and says why.
        for remote in [
            Diag::ControlDetectionTimeExpired,
            Diag::AdministrativelyDown,
        ] {
            assert_eq!(
                judge(
                    Diag::NeighborSignaledSessionDown,
                    Some(remote),
                    heard,
                    &steady(&[None])
                ),
                FarEnd::Unjudged
            );
        }
        assert_eq!(
            judge(Diag::AdministrativelyDown, None, heard, &steady(&[None])),
            FarEnd::Unjudged
        );
    }

    #[test]
    fn a_witness_that_lost_the_far_end_after_our_last_packet_does_not_count() {
        let t0 = Instant::now();
        let heard = (Some(t0), 10 * MS);
        let judge_by = |w: Witness| {
            judge(
                Diag::ControlDetectionTimeExpired,
                Some(Diag::None),
                heard,
                &[w],
            )
        };
        // The far end's agent was killed just after t0: another path timed it out too,
        // and its new agent answered there 30 ms later, before our detection time ran
        // out. A restart, not a failure of our path.
        let restarted = Witness {
            last_up: Some(t0 + 31 * MS),
            down_at: Some(t0 + 20 * MS),
        };
        assert_eq!(judge_by(restarted), FarEnd::Silent);
        // Up all along (or down only before our last packet), it heard the far end after
        // our packet was due: our path failed.
        // Or it fell after hearing the far end past our due time and has not come back:
        // what it heard then still says the far end lived.
        assert_eq!(
            judge_by(Witness {
                last_up: Some(t0 + 25 * MS),
                down_at: Some(t0 + 40 * MS),
            }),
            FarEnd::Alive
        );
        for down_at in [None, Some(t0 - 5 * MS)] {
            assert_eq!(
                judge_by(Witness {
                    down_at,
                    ..restarted
                }),
                FarEnd::Alive
            );
        }
    }
}
