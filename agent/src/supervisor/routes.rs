//! `crosslink routes`: what the agent has asked the kernel for, per site, in the
//! operator's terms (prefixes and where each came from, groups and their members by path
//! name). A question to the supervisor, answered from its state between two turns: it
//! changes nothing, is not recorded, and costs nothing when nobody asks. Whether the
//! kernel holds it is the control socket's to check (it reads the kernel; the supervisor
//! never does).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use tokio::sync::oneshot;

use crate::fib::plan::{self, Family, Members, SiteWant};
use crate::state::AgentState;

/// Questions to the supervisor that change nothing.
pub enum Question {
    Routes(oneshot::Sender<Routes>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    pub sites: Vec<SiteRoutes>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteRoutes {
    pub name: String,
    /// The groups the site's routes use: main and fallback, per family.
    pub groups: Vec<Group>,
    pub prefixes: Vec<Prefix>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: u32,
    /// `main` or `fallback`.
    pub role: &'static str,
    pub family: Family,
    /// None: nothing is healthy, the kernel's group is left as it is (fail static).
    pub members: Option<Vec<Member>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub path: String,
    pub id: u32,
    /// The line router; none for a tunnel (a device nexthop).
    pub via: Option<IpAddr>,
    pub weight: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prefix {
    pub prefix: IpNet,
    /// In the site's `prefixes`.
    pub configured: bool,
    /// Learned over BGP: from which line and neighbour.
    pub learned: Vec<(String, IpAddr)>,
}

/// The answer, from the wants last handed to the FIB programmer (none before the first).
pub(super) fn routes(
    st: &AgentState,
    wants: Option<&crate::routing::Wants>,
    ids: &crate::core::ids::Ids,
) -> Routes {
    let cfg = st.config();
    let Some(wants) = wants else {
        return Routes::default();
    };
    let sites = cfg
        .sites
        .iter()
        .filter_map(|s| {
            let name = s.name.get_ref();
            let index = ids.site(name)?;
            let want = wants.sites.iter().find(|w| w.index == index)?;
            Some(site(st, name, want, ids))
        })
        .collect();
    Routes { sites }
}

fn site(st: &AgentState, name: &str, want: &SiteWant, ids: &crate::core::ids::Ids) -> SiteRoutes {
    let cfg = st.config();
    let member = |m: &plan::Member, family| Member {
        path: ids.path_at(name, m.slot).unwrap_or("?").to_owned(),
        id: plan::member_id(want.index, m.slot, family),
        via: m.gateway,
        weight: m.weight,
    };
    let main: fn(u8, Family) -> u32 = plan::group_id;
    let fallback: fn(u8, Family) -> u32 = plan::fallback_group_id;
    let groups = [
        ("main", main, Family::V4, &want.v4),
        ("main", main, Family::V6, &want.v6),
        ("fallback", fallback, Family::V4, &want.fallback_v4),
        ("fallback", fallback, Family::V6, &want.fallback_v6),
    ]
    .into_iter()
    .map(|(role, id, family, members)| Group {
        id: id(want.index, family),
        role,
        family,
        members: match members {
            Members::Set(ms) => Some(ms.iter().map(|m| member(m, family)).collect()),
            _ => None,
        },
    })
    .collect();
    let configured: Vec<IpNet> = cfg
        .sites
        .iter()
        .filter(|s| s.name.get_ref() == name)
        .flat_map(|s| s.prefixes.iter().map(|p| p.get_ref().0.trunc()))
        .collect();
    let mut learned: BTreeMap<IpNet, Vec<(String, IpAddr)>> = BTreeMap::new();
    for n in st.bgp.values() {
        let on_site = cfg
            .lines
            .iter()
            .any(|l| l.name.get_ref() == &n.line && l.site.get_ref() == name);
        if on_site {
            for p in n.learned.keys() {
                learned
                    .entry(p.trunc())
                    .or_default()
                    .push((n.line.clone(), n.peer));
            }
        }
    }
    let prefixes = want
        .prefixes
        .iter()
        .map(|p| Prefix {
            prefix: *p,
            configured: configured.contains(p),
            learned: learned.remove(p).unwrap_or_default(),
        })
        .collect();
    SiteRoutes {
        name: name.to_owned(),
        groups,
        prefixes,
    }
}
