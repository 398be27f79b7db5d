//! `crosslink routes`: the supervisor says what it asked the kernel for (see
//! `supervisor::routes`); this side reads the kernel's objects and says, for each group
//! and each prefix, whether the kernel has them as asked. The wire form is here with its
//! reader; nothing below the control socket sees it.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::proto::Reply;
use crate::fib::nexthop::Kind;
use crate::fib::plan::{self, Family, Kernel};
use crate::supervisor::routes::{Group, Routes, SiteRoutes};
use crate::supervisor::Question;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutesDoc {
    /// False when the kernel could not be read (then every `in_kernel` is absent).
    pub kernel_read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_error: Option<String>,
    pub sites: Vec<SiteDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteDoc {
    pub name: String,
    pub groups: Vec<GroupDoc>,
    pub prefixes: Vec<PrefixDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDoc {
    pub id: u32,
    /// `main` (the routes' first choice) or `fallback` (used by the kernel alone when the
    /// main group's paths all lose their link).
    pub role: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// None: nothing healthy, the kernel's group is left as it was (fail static).
    #[serde(default)]
    pub members: Option<Vec<MemberDoc>>,
    /// The kernel holds the group with exactly these members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_kernel: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDoc {
    pub path: String,
    pub id: u32,
    /// The line router; absent for a tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub weight: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefixDoc {
    pub prefix: String,
    pub configured: bool,
    /// Learned over BGP: `{line, neighbor}` for each session that announced it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<Learned>,
    /// The kernel routes it through the site's main group, as asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_in_kernel: Option<bool>,
    /// The kernel has its fallback route (absent: none asked for, no fallback path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_in_kernel: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Learned {
    pub line: String,
    pub neighbor: String,
}

/// How long the supervisor and the kernel may take together.
const WITHIN: Duration = Duration::from_secs(5);

/// Asks the supervisor, reads the kernel, compares.
pub async fn answer(questions: &tokio::sync::mpsc::Sender<Question>) -> Reply {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if questions.send(Question::Routes(tx)).await.is_err() {
        return Reply::err("the agent is shutting down");
    }
    let routes = match tokio::time::timeout(WITHIN, rx).await {
        Ok(Ok(r)) => r,
        _ => return Reply::err(format!("the agent did not answer within {WITHIN:?}")),
    };
    let wanted: BTreeSet<IpNet> = routes
        .sites
        .iter()
        .flat_map(|s| s.prefixes.iter().map(|p| p.prefix))
        .collect();
    let kernel = match tokio::time::timeout(WITHIN, read_kernel(&wanted)).await {
        Ok(Ok(k)) => Ok(k),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer from the kernel within {WITHIN:?}")),
    };
    Reply::ok(doc(&routes, kernel.as_ref()))
}

/// The kernel's nexthops and the routes at our prefixes, on a netlink connection of this
/// request's own.
async fn read_kernel(wanted: &BTreeSet<IpNet>) -> Result<Kernel, String> {
    let (fib, nh_conn, rt_conn) = crate::fib::Fib::connect().map_err(|e| e.to_string())?;
    let conns = [tokio::spawn(nh_conn), tokio::spawn(rt_conn)];
    let kernel = fib.kernel(wanted, true).await.map_err(|e| e.to_string());
    for c in conns {
        c.abort();
    }
    kernel
}

/// The supervisor's answer with the kernel's verdicts.
pub fn doc(routes: &Routes, kernel: Result<&Kernel, &String>) -> RoutesDoc {
    RoutesDoc {
        kernel_read: kernel.is_ok(),
        kernel_error: kernel.err().cloned(),
        sites: routes
            .sites
            .iter()
            .map(|s| site_doc(s, kernel.ok()))
            .collect(),
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn site_doc(s: &SiteRoutes, kernel: Option<&Kernel>) -> SiteDoc {
    let group_of = |role: &str, family: Family| {
        s.groups
            .iter()
            .find(|g| g.role == role && g.family == family)
    };
    let prefixes =
        s.prefixes
            .iter()
            .map(|p| {
                let family = Family::of(p.prefix.addr());
                let route =
                    |role: &str, metric: u32| {
                        let g = group_of(role, family)?;
                        // No fallback route is asked for without a fallback path.
                        if role == "fallback" && g.members.as_ref().is_none_or(Vec::is_empty) {
                            return None;
                        }
                        let k = kernel?;
                        Some(k.routes.iter().any(|r| {
                            r.dst == p.prefix && r.metric == metric && r.nhid == Some(g.id)
                        }))
                    };
                PrefixDoc {
                    prefix: p.prefix.to_string(),
                    configured: p.configured,
                    learned: p
                        .learned
                        .iter()
                        .map(|(line, n)| Learned {
                            line: line.clone(),
                            neighbor: n.to_string(),
                        })
                        .collect(),
                    main_in_kernel: route("main", plan::METRIC),
                    fallback_in_kernel: route("fallback", plan::FALLBACK_METRIC),
                }
            })
            .collect();
    SiteDoc {
        name: s.name.clone(),
        groups: s.groups.iter().map(|g| group_doc(g, kernel)).collect(),
        prefixes,
    }
}

fn group_doc(g: &Group, kernel: Option<&Kernel>) -> GroupDoc {
    let in_kernel = kernel.map(|k| {
        let held = k.nexthops.iter().find(|n| n.id == g.id);
        match (held.map(|n| &n.kind), &g.members) {
            (Some(Kind::Group(held)), Some(want)) => {
                let held: BTreeSet<u32> = held.iter().map(|(id, _)| *id).collect();
                let want: BTreeSet<u32> = want.iter().map(|m| m.id).collect();
                held == want
            }
            // Fail static: whatever the kernel has is what is meant.
            (Some(Kind::Group(_)), None) => true,
            // A group with no member asked for is none in the kernel.
            (None, Some(want)) => want.is_empty(),
            _ => false,
        }
    });
    GroupDoc {
        id: g.id,
        role: g.role.to_owned(),
        family: family_name(g.family).to_owned(),
        members: g.members.as_ref().map(|ms| {
            ms.iter()
                .map(|m| MemberDoc {
                    path: m.path.clone(),
                    id: m.id,
                    via: m.via.map(|v| v.to_string()),
                    weight: m.weight,
                })
                .collect()
        }),
        in_kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::nexthop::Nexthop;
    use crate::fib::plan::KernelRoute;
    use crate::supervisor::routes::{Member, Prefix};

    fn routes() -> Routes {
        let line = |path: &str, id| Member {
            path: path.into(),
            id,
            via: Some("198.19.11.2".parse().unwrap()),
            weight: 1,
        };
        let group = |id, role, family, members| Group {
            id,
            role,
            family,
            members,
        };
        Routes {
            sites: vec![SiteRoutes {
                name: "cloud-b".into(),
                groups: vec![
                    group(100, "main", Family::V4, Some(vec![line("line1", 102)])),
                    group(101, "main", Family::V6, None),
                    group(200, "fallback", Family::V4, Some(vec![line("line2", 104)])),
                    group(201, "fallback", Family::V6, Some(vec![])),
                ],
                prefixes: vec![
                    Prefix {
                        prefix: "198.18.2.0/24".parse().unwrap(),
                        configured: true,
                        learned: vec![],
                    },
                    Prefix {
                        prefix: "10.2.0.0/16".parse().unwrap(),
                        configured: false,
                        learned: vec![("line1".into(), "198.19.11.2".parse().unwrap())],
                    },
                    Prefix {
                        prefix: "2001:db8:b::/64".parse().unwrap(),
                        configured: true,
                        learned: vec![],
                    },
                ],
            }],
        }
    }

    fn route(dst: &str, metric: u32, nhid: u32) -> KernelRoute {
        KernelRoute {
            dst: dst.parse().unwrap(),
            metric,
            protocol: plan::PROTOCOL,
            nhid: Some(nhid),
        }
    }

    #[test]
    fn each_group_and_route_is_compared_with_what_was_asked() {
        let group = |id, members: Vec<u32>| Nexthop {
            id,
            family: 2,
            protocol: plan::PROTOCOL,
            kind: Kind::Group(members.into_iter().map(|m| (m, 1)).collect()),
        };
        let kernel = Kernel {
            // The v4 main group with a member nobody asked for; the v6 one as it was.
            nexthops: vec![
                group(100, vec![102, 106]),
                group(101, vec![103]),
                group(200, vec![104]),
            ],
            routes: vec![
                route("198.18.2.0/24", plan::METRIC, 100),
                route("198.18.2.0/24", plan::FALLBACK_METRIC, 200),
                // Learned, but its fallback route is gone.
                route("10.2.0.0/16", plan::METRIC, 100),
                route("2001:db8:b::/64", plan::METRIC, 101),
            ],
        };
        let doc = doc(&routes(), Ok(&kernel));
        assert!(doc.kernel_read);
        let s = &doc.sites[0];
        let in_kernel: Vec<Option<bool>> = s.groups.iter().map(|g| g.in_kernel).collect();
        assert_eq!(in_kernel, [Some(false), Some(true), Some(true), Some(true)]);
        let p: Vec<(&str, Option<bool>, Option<bool>)> = s
            .prefixes
            .iter()
            .map(|p| (p.prefix.as_str(), p.main_in_kernel, p.fallback_in_kernel))
            .collect();
        assert_eq!(
            p,
            [
                ("198.18.2.0/24", Some(true), Some(true)),
                ("10.2.0.0/16", Some(true), Some(false)),
                // No IPv6 fallback path: no fallback route asked for.
                ("2001:db8:b::/64", Some(true), None),
            ]
        );
        assert_eq!(s.prefixes[1].learned[0].line, "line1");
    }

    #[test]
    fn an_unreadable_kernel_leaves_the_verdicts_out() {
        let e = "permission denied".to_owned();
        let doc = doc(&routes(), Err(&e));
        assert!(!doc.kernel_read);
        assert_eq!(doc.kernel_error.as_deref(), Some("permission denied"));
        assert!(doc.sites[0].groups.iter().all(|g| g.in_kernel.is_none()));
        assert!(doc.sites[0]
            .prefixes
            .iter()
            .all(|p| p.main_in_kernel.is_none()));
    }
}
