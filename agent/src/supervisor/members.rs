//! A choice of paths as kernel nexthop members: a line through its router's address of
//! each family, a tunnel out of its interface.

use crate::config::{Config, PathRef};
use crate::core::ids::Ids;
use crate::fib::plan::{Family, Member, Members};
use crate::select::{Choice, Mode};
use crate::sources::links::LinkTable;

/// Interface indexes, from the links source's table (none before its first: no member).
#[derive(Clone, Copy)]
pub(crate) struct Ifindexes<'a>(Option<&'a LinkTable>);

impl<'a> Ifindexes<'a> {
    pub(crate) fn of(st: &'a crate::state::AgentState) -> Ifindexes<'a> {
        Ifindexes(st.links.as_ref())
    }

    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.0?.get(name).map(|l| l.index)
    }
}

/// The kernel members of `choice` for one family. A path whose interface is gone is left
/// out; nothing chosen (or nothing of this family) keeps what the kernel has.
pub(crate) fn members(
    cfg: &Config,
    ids: &Ids,
    site: &str,
    choice: &Choice,
    family: Family,
    ifindexes: Ifindexes<'_>,
) -> Members {
    if choice.mode == Mode::AllDown {
        return match member_list(cfg, ids, site, &choice.fallback, family, ifindexes) {
            m if m.is_empty() => Members::Keep,
            m => Members::KeepOr(m),
        };
    }
    let out = member_list(cfg, ids, site, &choice.members, family, ifindexes);
    // A family the chosen paths do not carry (a line without an IPv6 neighbour) keeps
    // what it has rather than losing its routes.
    if out.is_empty() {
        Members::Keep
    } else {
        Members::Set(out)
    }
}

/// The members for the `chosen` paths with their weights, in the site's path order; a
/// member's slot is its path's stable id (a path without one is left out).
pub(crate) fn member_list(
    cfg: &Config,
    ids: &Ids,
    site: &str,
    chosen: &[(String, u16)],
    family: Family,
    ifindexes: Ifindexes<'_>,
) -> Vec<Member> {
    let mut out = Vec::new();
    for p in cfg.paths_of(site) {
        let Some((_, weight)) = chosen.iter().find(|(n, _)| n == p.name()) else {
            continue;
        };
        let Some(slot) = ids.path(site, p.name()) else {
            continue;
        };
        let (iface, gateway) = match p {
            PathRef::Line(l) => {
                let gw = l
                    .neighbors
                    .get_ref()
                    .iter()
                    .find(|a| Family::of(**a) == family);
                match gw {
                    Some(gw) => (l.interface.get_ref(), Some(*gw)),
                    None => continue,
                }
            }
            PathRef::Tunnel(t) => (t.interface.get_ref(), None),
        };
        let Some(ifindex) = ifindexes.get(iface) else {
            continue;
        };
        out.push(Member {
            slot,
            ifindex,
            gateway,
            weight: *weight,
        });
    }
    // In id order, not config order: a group's members are compared (and the kernel
    // hashes flows over them) in their order, so reordering the config must not change it.
    out.sort_by_key(|m| m.slot);
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn members_follow_the_choice_per_family() {
        let cfg = crate::config::tests::one_line_site("lo", "");
        let c = Choice::of(Mode::Lines, &["l1"]);
        let table: LinkTable = [(
            "lo".to_owned(),
            crate::sources::links::Link { index: 1, up: true },
        )]
        .into();
        let lo = 1;
        let ifindexes = Ifindexes(Some(&table));
        let mut ids = Ids::default();
        ids.assign(&cfg.layout(), 127);
        assert_eq!(
            members(&cfg, &ids, "b", &c, Family::V4, ifindexes),
            Members::Set(vec![Member {
                slot: 0,
                ifindex: lo,
                gateway: Some(IpAddr::from([192, 0, 2, 2])),
                weight: 1
            }])
        );
        assert_eq!(
            members(&cfg, &ids, "b", &c, Family::V6, ifindexes),
            Members::Keep,
            "no IPv6 neighbour: the IPv6 routes stay as they are"
        );
        assert_eq!(
            members(
                &cfg,
                &ids,
                "b",
                &Choice::of(Mode::AllDown, &[]),
                Family::V4,
                ifindexes
            ),
            Members::Keep
        );
    }
}
