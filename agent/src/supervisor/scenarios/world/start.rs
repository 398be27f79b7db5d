//! How the agent starts in the world: the sources' first inputs, a restart from what the
//! previous run kept on disk and left in the kernel, and a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use probes::wire::State;
use tokio::sync::oneshot;

use super::super::Shape;
use super::World;
use crate::config::{Config, PathRef};
use crate::routing::Adopted;
use crate::sources::bfd::Key;
use crate::sources::links::Link;
use crate::state::AgentState;
use crate::supervisor::engine::Engine;
use crate::supervisor::input::Input;

impl World {
    /// What the sources send as the agent starts: the paths as the world has them (at
    /// the first start, every one up), and what the kernel holds of a previous run.
    pub(super) fn start(&mut self, kernel: Adopted) {
        if self.links.is_empty() {
            let cfg = &self.cfg;
            let lines = cfg.lines.iter().map(|l| l.interface.get_ref().clone());
            let tunnels = cfg.tunnels.iter().map(|t| t.interface.get_ref().clone());
            self.links = lines
                .chain(tunnels)
                .zip(2..)
                .map(|(name, index)| (name, Link { index, up: true }))
                .collect();
            self.fresh = cfg
                .tunnels
                .iter()
                .map(|t| t.name.get_ref().clone())
                .collect();
        }
        self.apply(Input::Links {
            table: self.links.clone(),
            followed: true,
        });
        for l in self.cfg.lines.clone() {
            for &peer in l.neighbors.get_ref() {
                let line = l.name.get_ref().clone();
                self.apply(Input::BgpNeighbor { line, peer });
                let allowed = self.bgp.get(&peer).is_none_or(|b| b.0);
                self.bgp.insert(peer, (allowed, false));
            }
        }
        // The BFD driver numbers its sessions afresh; each comes up as the world has it.
        let was: BTreeMap<Key, State> =
            self.bfd.iter().map(|(k, (_, s))| (k.clone(), *s)).collect();
        self.bfd.clear();
        for spec in crate::sources::bfd::specs(&self.cfg) {
            self.add_bfd(&spec);
        }
        for name in self.fresh.clone() {
            let retried = false;
            self.apply(Input::TunnelStarted { name, retried });
        }
        self.apply(Input::Adopted(kernel));
        let peers: Vec<IpAddr> = self.bgp.keys().copied().collect();
        for peer in peers {
            self.bgp_up(peer);
        }
        for key in self.bfd.keys().cloned().collect::<Vec<_>>() {
            let up = was.get(&key).is_none_or(|s| *s == State::Up);
            self.bfd_to(&key, up);
        }
        self.poll();
    }

    /// A BFD session the driver starts (Down until the world brings it up).
    fn add_bfd(&mut self, spec: &probes::driver::SessionSpec) -> Key {
        self.sessions += 1;
        let (key, id) = (crate::sources::bfd::key(spec), self.sessions);
        let view = crate::sources::bfd::view(spec);
        self.apply(Input::BfdSession(key.clone(), Box::new(view)));
        self.apply(Input::BfdFollows(key.clone(), Some(id)));
        self.bfd.insert(key.clone(), (id, State::Down));
        key
    }

    /// A reload (`reload::reload`): the engine takes the new config first and the reload
    /// waits for the pass programmed with it (paths left out leave the groups while their
    /// sessions still run); then the sources stop the sessions of paths left out, retime
    /// or restart changed BFD sessions, and start the sessions of paths added (up, as the
    /// world has their links).
    pub(in crate::supervisor::scenarios) fn reload(&mut self, shape: &Shape) {
        use crate::sources::bfd::{change, key, specs, Change};
        let new = super::super::config(self._dir.path(), shape);
        let (ack, mut programmed) = oneshot::channel();
        self.apply(Input::Config(Box::new(new.clone()), ack));
        self.turn();
        assert!(
            programmed.try_recv().is_ok(),
            "a reload is answered by the pass programmed with it"
        );
        let old = std::mem::replace(&mut self.cfg, new);
        let was: BTreeMap<Key, _> = specs(&old).into_iter().map(|s| (key(&s), s)).collect();
        let now: BTreeMap<Key, _> = specs(&self.cfg).into_iter().map(|s| (key(&s), s)).collect();
        for k in was.keys().filter(|k| !now.contains_key(*k)) {
            self.bfd.remove(k);
            self.apply(Input::BfdGone(k.clone()));
        }
        let peers = |cfg: &Config| -> BTreeMap<IpAddr, String> {
            let lines = cfg.lines.iter();
            lines
                .flat_map(|l| {
                    l.neighbors
                        .get_ref()
                        .iter()
                        .map(|p| (*p, l.name.get_ref().clone()))
                })
                .collect()
        };
        let (old_peers, new_peers) = (peers(&old), peers(&self.cfg));
        for peer in old_peers.keys().filter(|p| !new_peers.contains_key(*p)) {
            self.bgp.remove(peer);
            self.apply(Input::BgpGone(*peer));
        }
        let tunnels: BTreeSet<String> = self
            .cfg
            .tunnels
            .iter()
            .map(|t| t.name.get_ref().clone())
            .collect();
        self.apply(Input::TunnelsKept(tunnels.clone()));
        let started: Vec<String> = old
            .tunnels
            .iter()
            .map(|t| t.name.get_ref().clone())
            .collect();
        for name in tunnels.into_iter().filter(|t| !started.contains(t)) {
            self.fresh.insert(name.clone());
            self.apply(Input::TunnelStarted {
                name,
                retried: false,
            });
        }
        for (peer, line) in new_peers
            .into_iter()
            .filter(|(p, _)| !old_peers.contains_key(p))
        {
            self.apply(Input::BgpNeighbor { line, peer });
            self.bgp.insert(peer, (true, false));
            self.bgp_up(peer);
        }
        for (k, spec) in &now {
            let restarted = match was.get(k) {
                None => true,
                Some(old) if old == spec => false,
                Some(old) => change(old, spec) != Some(Change::Timers),
            };
            if restarted {
                self.bfd.remove(k);
                let k = self.add_bfd(spec);
                self.bfd_to(&k, true);
            } else if was[k] != *spec {
                let id = self.bfd[k].0;
                self.apply(Input::BfdFollows(k.clone(), Some(id)));
            }
        }
        self.poll();
    }

    /// The agent restarts: a new engine from what the last run handed out to keep (ids,
    /// marks, standings) and the group it left in the kernel; the world stays as it is.
    pub(in crate::supervisor::scenarios) fn restart(&mut self) {
        let mut kept = crate::supervisor::Persist::default();
        for p in &self.persisted {
            kept.ids = p.ids.clone().or(kept.ids);
            kept.marks = p.marks.clone().or(kept.marks);
            kept.standings = p.standings.clone().or(kept.standings);
        }
        let ids = kept
            .ids
            .expect("the ids were handed out at the first start");
        let kernel = self.kernel(&ids);
        let mut st = AgentState::new(self.cfg.clone(), Path::new("gw.toml"), self.now);
        st.resumed_ids = ids;
        let (marks, standings) = (kept.marks.unwrap_or_default(), kept.standings);
        crate::resume(&mut st, marks, standings.unwrap_or_default());
        self.engine = Engine::new(st, true, true);
        self.record = None;
        self.events_seen = 0;
        self.last_decision = self.now;
        self.start(kernel);
    }

    /// The kernel's objects the running engine's group left: every path's member object,
    /// and the slots of the group carrying the site.
    fn kernel(&self, ids: &crate::core::ids::Ids) -> Adopted {
        let site = ids.site("b").expect("the site's id");
        let mut kernel = Adopted::default();
        for p in self.cfg.paths_of("b") {
            let Some(slot) = ids.path("b", p.name()) else {
                continue;
            };
            let oif = self.links[p.interface()].index;
            let gateway = match p {
                PathRef::Line(l) => l.neighbors.get_ref().first().copied(),
                PathRef::Tunnel(_) => None,
            };
            kernel.members.push((site, slot, gateway, oif));
        }
        let carrying = self.group.iter().flat_map(|g| g.split('+'));
        let slots = carrying.filter_map(|p| ids.path("b", p)).collect();
        kernel.carrying.insert(site, slots);
        kernel
    }
}
