//! How the agent starts in the world: the sources' first inputs, and a restart from what
//! the previous run kept on disk and left in the kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use probes::wire::State;

use super::World;
use crate::config::PathRef;
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
            self.sessions += 1;
            let (key, id) = (crate::sources::bfd::key(&spec), self.sessions);
            let view = crate::sources::bfd::view(&spec);
            self.apply(Input::BfdSession(key.clone(), Box::new(view)));
            self.apply(Input::BfdFollows(key.clone(), Some(id)));
            self.bfd.insert(key, (id, State::Down));
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
