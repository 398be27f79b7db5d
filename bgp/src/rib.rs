//! Adj-RIB-In of one session, with the import filter, and the export side (what we
//! announce and how), both sans-IO.
//!
//! Import accepts only prefixes inside the site's aggregates, no longer than each allows
//! (a prefix-list's `le`), never a default route, and caps their number, so a leak or a
//! more-specific on the line router cannot pull this host's traffic. Each refusal says why. Path attributes are interned:
//! the 100,000 routes of a table share a few hundred attribute sets, so each route costs
//! its prefix, a pointer and a flag.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::wire::{
    err, AsPath, Ctx, Family, Notification, Origin, PathAttrs, Update, GRACEFUL_SHUTDOWN,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPrefixAction {
    /// Log and keep accepting.
    Warn,
    /// Close the session with Cease / Maximum Number of Prefixes Reached (RFC 4486).
    Teardown,
}

/// An aggregate of the site and the longest prefix accepted inside it, as a prefix-list
/// entry `198.18.0.0/16 le 24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportBound {
    pub net: IpNet,
    pub max_len: u8,
}

impl ImportBound {
    fn admits(&self, p: &IpNet) -> bool {
        self.net.contains(p) && p.prefix_len() <= self.max_len
    }
}

/// Why an announced prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// RFC 7606 treat-as-withdraw: an attribute of the UPDATE was malformed (which one).
    Malformed(&'static str),
    /// RFC 4271 §6.3: on eBGP the AS_PATH must start with the neighbour's ASN.
    FirstAs,
    /// Our own ASN in the AS_PATH (RFC 4271 §9.1.2): a loop.
    AsLoop,
    /// 0.0.0.0/0 or ::/0: it would pull all of this host's traffic onto the line.
    DefaultRoute,
    /// Not inside any aggregate of the site.
    OutsideSite,
    /// Inside an aggregate but longer than it allows: a more-specific that would win over
    /// the site's own routes.
    TooSpecific,
    /// Beyond max_prefixes while the action is to tear the session down.
    MaxPrefix,
    /// RFC 4271 §6.3: the NEXT_HOP is our own address on the session: forwarding by it
    /// would loop back to us.
    NextHopSelf,
}

impl Rejection {
    /// A bounded label for counters and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::FirstAs => "first-as",
            Rejection::AsLoop => "as-loop",
            Rejection::DefaultRoute => "default-route",
            Rejection::OutsideSite => "outside-site",
            Rejection::TooSpecific => "too-specific",
            Rejection::MaxPrefix => "max-prefix",
            Rejection::NextHopSelf => "next-hop-self",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Malformed(why) => write!(f, "malformed UPDATE ({why}), treated as withdraw"),
            Rejection::FirstAs => f.write_str("AS_PATH does not start with the neighbour's ASN"),
            Rejection::AsLoop => f.write_str("AS_PATH contains our own ASN (loop)"),
            Rejection::DefaultRoute => f.write_str("a default route"),
            Rejection::OutsideSite => f.write_str("outside the site's aggregates"),
            Rejection::TooSpecific => f.write_str("more specific than the site's aggregates allow"),
            Rejection::MaxPrefix => f.write_str("beyond max_prefixes"),
            Rejection::NextHopSelf => f.write_str("NEXT_HOP is our own address"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportPolicy {
    /// Accepted prefixes must lie inside one of these, no longer than it allows.
    pub bounds: Vec<ImportBound>,
    pub max_prefixes: u32,
    pub action: MaxPrefixAction,
    /// Our ASN: a path that already contains it is a loop.
    pub local_asn: u32,
    /// The neighbour's ASN: on eBGP it must lead the AS_PATH (RFC 4271 §6.3).
    pub peer_asn: u32,
}

/// What a route carries besides its prefix; shared between routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    pub next_hop: IpAddr,
    pub attrs: PathAttrs,
}

#[derive(Debug, Clone)]
struct Entry {
    attrs: Arc<RouteAttrs>,
    /// Kept from before a session loss until refreshed or swept (RFC 4724).
    stale: bool,
}

/// Changes an UPDATE made to the Adj-RIB-In.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RibDelta {
    /// New or changed routes with their next hop.
    pub added: Vec<(IpNet, IpAddr)>,
    /// Those of `added` that carry GRACEFUL_SHUTDOWN (RFC 8326): the neighbour asks to be
    /// left for any other path while it still forwards.
    pub graceful_shutdown: Vec<IpNet>,
    pub withdrawn: Vec<IpNet>,
    /// Announced prefixes refused by the import filter, with the reason.
    pub rejected: Vec<(IpNet, Rejection)>,
    /// Set when the accepted count passed the limit.
    pub over_limit: Option<u32>,
}

impl RibDelta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.withdrawn.is_empty()
            && self.rejected.is_empty()
            && self.over_limit.is_none()
    }
}

pub struct AdjRibIn {
    policy: ImportPolicy,
    /// Our address on the established connection (see `set_local`).
    local: Option<IpAddr>,
    routes: HashMap<IpNet, Entry>,
    interned: HashSet<Arc<RouteAttrs>>,
    rejected_total: u64,
}

impl AdjRibIn {
    pub fn new(policy: ImportPolicy) -> AdjRibIn {
        AdjRibIn {
            policy,
            local: None,
            routes: HashMap::new(),
            interned: HashSet::new(),
            rejected_total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected_total
    }

    pub fn get(&self, prefix: &IpNet) -> Option<(&RouteAttrs, bool)> {
        self.routes.get(prefix).map(|e| (e.attrs.as_ref(), e.stale))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, IpAddr, bool)> {
        self.routes
            .iter()
            .map(|(p, e)| (p, e.attrs.next_hop, e.stale))
    }

    /// Distinct attribute sets held: what interning buys.
    pub fn attr_sets(&self) -> usize {
        self.interned.len()
    }

    /// Applies an UPDATE received on an Established session with the negotiated `ctx`.
    /// Our address on the session now established: routes whose next hop it is are
    /// refused (RFC 4271 §6.3).
    pub fn set_local(&mut self, local: Option<IpAddr>) {
        self.local = local;
    }

    /// Refuses `prefixes` for `why`, withdrawing what was held for them.
    fn refuse_all<'a>(
        &mut self,
        prefixes: impl Iterator<Item = &'a IpNet>,
        why: Rejection,
        d: &mut RibDelta,
    ) {
        for p in prefixes {
            if self.remove(p) {
                d.withdrawn.push(*p);
            }
            d.rejected.push((*p, why));
        }
    }

    pub fn apply(&mut self, u: &Update, ebgp: bool) -> RibDelta {
        let mut d = RibDelta::default();
        for p in u.withdrawn_all() {
            if self.remove(p) {
                d.withdrawn.push(*p);
            }
        }
        let verdict = u
            .treat_as_withdraw
            .map(Rejection::Malformed)
            .or_else(|| self.path_check(u, ebgp));
        if let Some(why) = verdict {
            // RFC 7606 treat-as-withdraw (or a path we must not use): the announced
            // prefixes are gone, whatever we held for them before.
            self.refuse_all(u.announced(), why, &mut d);
            self.rejected_total += d.rejected.len() as u64;
            return d;
        }
        let local = self.local;
        let ours = |nh: IpAddr| local == Some(nh);
        let mut attrs = u.attrs.clone();
        if ebgp {
            // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored.
            attrs.local_pref = None;
        }
        if !u.nlri.is_empty() {
            if u.attrs.next_hop.is_some_and(|nh| ours(IpAddr::V4(nh))) {
                self.refuse_all(u.nlri.iter(), Rejection::NextHopSelf, &mut d);
            } else if let Some(nh) = u.attrs.next_hop {
                let shared = self.intern(RouteAttrs {
                    next_hop: IpAddr::V4(nh),
                    attrs: attrs.clone(),
                });
                for p in &u.nlri {
                    self.accept(*p, &shared, &mut d);
                }
            }
        }
        if let Some(mp) = &u.mp_reach {
            // Prefer the global next hop; a link-local one alone is usable on the link.
            if mp.next_hops.first().is_some_and(|nh| ours(*nh)) {
                self.refuse_all(mp.nlri.iter(), Rejection::NextHopSelf, &mut d);
            } else if let Some(nh) = mp.next_hops.first() {
                let shared = self.intern(RouteAttrs {
                    next_hop: *nh,
                    attrs,
                });
                for p in &mp.nlri {
                    self.accept(*p, &shared, &mut d);
                }
            }
        }
        self.rejected_total += d.rejected.len() as u64;
        if self.routes.len() > self.policy.max_prefixes as usize {
            d.over_limit = Some(self.policy.max_prefixes);
        }
        d
    }

    /// RFC 4271 §6.3 and §9.1.2: paths we may not use. Returns the reason.
    fn path_check(&self, u: &Update, ebgp: bool) -> Option<Rejection> {
        let path = u.attrs.as_path.as_ref()?;
        u.announced().next()?;
        if ebgp && path.first_asn() != Some(self.policy.peer_asn) {
            return Some(Rejection::FirstAs);
        }
        if path.contains(self.policy.local_asn) {
            return Some(Rejection::AsLoop);
        }
        None
    }

    /// Why the import filter refuses `p`, if it does (the count limit aside).
    fn refuses(&self, p: &IpNet) -> Option<Rejection> {
        if p.prefix_len() == 0 {
            Some(Rejection::DefaultRoute)
        } else if self.policy.bounds.iter().any(|b| b.admits(p)) {
            None
        } else if self.policy.bounds.iter().any(|b| b.net.contains(p)) {
            Some(Rejection::TooSpecific)
        } else {
            Some(Rejection::OutsideSite)
        }
    }

    fn accept(&mut self, p: IpNet, attrs: &Arc<RouteAttrs>, d: &mut RibDelta) {
        if let Some(why) = self.refuses(&p) {
            // An earlier accepted version of it cannot exist: it would have been refused
            // too (a new policy removes what it no longer admits).
            d.rejected.push((p, why));
            return;
        }
        // The lookup only at the limit: a table streaming in pays nothing for it.
        if self.policy.action == MaxPrefixAction::Teardown
            && self.routes.len() >= self.policy.max_prefixes as usize
            && !self.routes.contains_key(&p)
        {
            // Never installed, even for the moment before the session closes: a leak
            // must not pull traffic.
            d.rejected.push((p, Rejection::MaxPrefix));
            d.over_limit = Some(self.policy.max_prefixes);
            return;
        }
        let changed = match self.routes.get(&p) {
            Some(e) => e.stale || !Arc::ptr_eq(&e.attrs, attrs),
            None => true,
        };
        if let Some(old) = self.routes.insert(
            p,
            Entry {
                attrs: attrs.clone(),
                stale: false,
            },
        ) {
            self.release(old.attrs);
        }
        if changed {
            d.added.push((p, attrs.next_hop));
            if attrs.attrs.communities.contains(&GRACEFUL_SHUTDOWN) {
                d.graceful_shutdown.push(p);
            }
        }
    }

    fn intern(&mut self, ra: RouteAttrs) -> Arc<RouteAttrs> {
        if let Some(a) = self.interned.get(&ra) {
            return a.clone();
        }
        let a = Arc::new(ra);
        self.interned.insert(a.clone());
        a
    }

    fn remove(&mut self, p: &IpNet) -> bool {
        let Some(e) = self.routes.remove(p) else {
            return false;
        };
        self.release(e.attrs);
        true
    }

    /// Drops an attribute set from the intern table once no route uses it (the table and
    /// `attrs` itself hold the last two references).
    fn release(&mut self, attrs: Arc<RouteAttrs>) {
        if Arc::strong_count(&attrs) == 2 {
            self.interned.remove(&attrs);
        }
    }

    /// Marks every route stale (the session is gone but its routes are kept).
    pub fn mark_stale(&mut self) {
        for e in self.routes.values_mut() {
            e.stale = true;
        }
    }

    /// Removes the routes of `family` (all families with `None`) still stale: after the
    /// peer's End-of-RIB, or when the stale timer runs out.
    pub fn sweep_stale(&mut self, family: Option<Family>) -> Vec<IpNet> {
        let gone: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(p, e)| e.stale && family.is_none_or(|f| Family::of(p) == f))
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.remove(p);
        }
        gone
    }

    /// Drops everything (the session ended for good).
    pub fn clear(&mut self) -> Vec<IpNet> {
        let all: Vec<IpNet> = self.routes.keys().copied().collect();
        self.routes.clear();
        self.interned.clear();
        all
    }

    /// The NOTIFICATION for a max-prefix teardown (RFC 4486 §4: AFI, SAFI, limit).
    pub fn max_prefix_notification(&self, family: Family) -> Notification {
        let mut n = Notification::new(err::CEASE, err::CEASE_MAX_PREFIXES);
        n.data.extend_from_slice(&family.afi().to_be_bytes());
        n.data.push(family.safi());
        n.data
            .extend_from_slice(&self.policy.max_prefixes.to_be_bytes());
        n
    }

    pub fn policy(&self) -> &ImportPolicy {
        &self.policy
    }

    /// A new import policy: the routes it no longer admits go (returned). Routes it now
    /// admits but refused before come only when the peer sends them again.
    pub fn set_policy(&mut self, policy: ImportPolicy) -> Vec<IpNet> {
        self.policy = policy;
        let gone: Vec<IpNet> = self
            .routes
            .keys()
            .filter(|p| self.refuses(p).is_some())
            .copied()
            .collect();
        for p in &gone {
            self.remove(p);
        }
        gone
    }
}

/// How our prefixes are announced on one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPolicy {
    pub local_asn: u32,
    pub prefixes: Vec<IpNet>,
    pub med: Option<u32>,
    /// Extra copies of our ASN, to make this path unattractive to the far side.
    pub prepend: u8,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    /// Announce nothing (withdraw all), e.g. while the line is drained.
    pub withdrawn: bool,
}

impl ExportPolicy {
    fn attrs(&self, next_hop_v4: Option<IpAddr>) -> PathAttrs {
        PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![
                self.local_asn;
                1 + usize::from(self.prepend)
            ])),
            next_hop: match next_hop_v4 {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            },
            med: self.med,
            communities: self.communities.clone(),
            large_communities: self.large_communities.clone(),
            ..PathAttrs::default()
        }
    }

    /// The UPDATEs that announce our prefixes of each negotiated family, given the next
    /// hops this session can offer. A family without a next hop is skipped.
    pub fn announcements(
        &self,
        families: &[Family],
        next_hop_v4: Option<IpAddr>,
        next_hops_v6: &[IpAddr],
        ctx: &Ctx,
    ) -> Vec<Update> {
        if self.withdrawn {
            return Vec::new();
        }
        let mut out = Vec::new();
        let attrs = self.attrs(next_hop_v4);
        for &f in families {
            let prefixes = self.prefixes_of(f);
            if prefixes.is_empty() {
                continue;
            }
            match f {
                Family::Ipv4 if attrs.next_hop.is_some() => {
                    out.extend(Update::announce(f, &prefixes, &attrs, &[], ctx))
                }
                Family::Ipv6 if !next_hops_v6.is_empty() => {
                    out.extend(Update::announce(f, &prefixes, &attrs, next_hops_v6, ctx))
                }
                _ => {}
            }
        }
        out
    }

    fn prefixes_of(&self, f: Family) -> Vec<IpNet> {
        self.prefixes
            .iter()
            .copied()
            .filter(|p| Family::of(p) == f)
            .collect()
    }

    /// UPDATEs withdrawing every prefix this policy announced.
    pub fn withdrawals(&self, families: &[Family]) -> Vec<Update> {
        let mut out = Vec::new();
        for &f in families {
            let prefixes = self.prefixes_of(f);
            if !prefixes.is_empty() {
                out.extend(Update::withdraw_prefixes(f, &prefixes));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
