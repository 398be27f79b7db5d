//! Stable ids for sites and paths, from their names: the kernel objects of a site's
//! nexthop groups are numbered by them (`fib::plan`), so an id must not change when the
//! config is reordered (a `[[line]]` moved in a template would otherwise re-point every
//! route, and a restarted agent would credit the wrong path with what the kernel carries).
//!
//! Ids are kept beside the operator's marks. A name keeps its id while it is configured;
//! a newcomer takes the lowest free one; a name that left frees its id. A first start
//! numbers in config order, as the ids by position did before, so the kernel objects of
//! an agent from before stable ids are found where it left them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// At most this many sites (ids 0..=255) and paths per site.
pub const MAX_SITES: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    sites: BTreeMap<String, u8>,
    /// Per site name, its paths' ids.
    paths: BTreeMap<String, BTreeMap<String, u8>>,
}

/// The lowest id below `limit` not in `taken`.
fn lowest_free<'a>(taken: impl Iterator<Item = &'a u8>, limit: usize) -> Option<u8> {
    let mut used = [false; 256];
    for t in taken {
        used[usize::from(*t)] = true;
    }
    (0..limit.min(256)).find(|i| !used[*i]).map(|i| i as u8)
}

impl Ids {
    /// Gives every site of `layout` (names with their paths, in config order) and every
    /// path an id, keeping those they had, at most `max_paths` per site. Returns whether
    /// anything changed (to be saved). Names beyond the limits get none.
    pub fn assign(&mut self, layout: &[(String, Vec<String>)], max_paths: usize) -> bool {
        let before = self.clone();
        self.sites.retain(|s, _| layout.iter().any(|(n, _)| n == s));
        self.paths.retain(|s, _| self.sites.contains_key(s));
        for (site, paths) in layout {
            if !self.sites.contains_key(site) {
                let Some(id) = lowest_free(self.sites.values(), MAX_SITES) else {
                    continue;
                };
                self.sites.insert(site.clone(), id);
            }
            let ids = self.paths.entry(site.clone()).or_default();
            ids.retain(|p, _| paths.contains(p));
            for p in paths {
                if ids.contains_key(p) {
                    continue;
                }
                if let Some(id) = lowest_free(ids.values(), max_paths) {
                    ids.insert(p.clone(), id);
                }
            }
        }
        *self != before
    }

    pub fn site(&self, site: &str) -> Option<u8> {
        self.sites.get(site).copied()
    }

    pub fn path(&self, site: &str, path: &str) -> Option<u8> {
        self.paths.get(site)?.get(path).copied()
    }

    /// The path that has id `slot` in `site`.
    pub fn path_at(&self, site: &str, slot: u8) -> Option<&str> {
        self.paths
            .get(site)?
            .iter()
            .find(|(_, id)| **id == slot)
            .map(|(p, _)| p.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(sites: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        sites
            .iter()
            .map(|(s, p)| (s.to_string(), p.iter().map(|p| p.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_first_start_numbers_in_config_order() {
        let mut ids = Ids::default();
        assert!(ids.assign(
            &layout(&[("b", &["line1", "line2", "inet1"]), ("c", &["line3"])]),
            127
        ));
        assert_eq!((ids.site("b"), ids.site("c")), (Some(0), Some(1)));
        assert_eq!(ids.path("b", "line1"), Some(0));
        assert_eq!(ids.path("b", "inet1"), Some(2));
        assert_eq!(ids.path("c", "line3"), Some(0));
        assert_eq!(ids.path_at("b", 1), Some("line2"));
        assert!(!ids.assign(
            &layout(&[("b", &["line1", "line2", "inet1"]), ("c", &["line3"])]),
            127
        ));
    }

    #[test]
    fn reordering_keeps_every_id_and_newcomers_take_the_lowest_free() {
        let mut ids = Ids::default();
        ids.assign(&layout(&[("b", &["line1", "line2", "inet1"])]), 127);
        // line2 moved first, a new site in front, a line added: nothing that was moves.
        assert!(ids.assign(
            &layout(&[("a", &["x"]), ("b", &["line2", "line3", "line1", "inet1"])]),
            127
        ));
        assert_eq!(ids.site("b"), Some(0));
        assert_eq!(ids.site("a"), Some(1));
        assert_eq!(ids.path("b", "line1"), Some(0));
        assert_eq!(ids.path("b", "line2"), Some(1));
        assert_eq!(ids.path("b", "inet1"), Some(2));
        assert_eq!(ids.path("b", "line3"), Some(3));
        // line1 leaves: its id is free for the next newcomer.
        ids.assign(
            &layout(&[("a", &["x"]), ("b", &["line2", "line3", "inet1"])]),
            127,
        );
        assert_eq!(ids.path("b", "line1"), None);
        ids.assign(
            &layout(&[("a", &["x"]), ("b", &["line2", "line3", "inet1", "line4"])]),
            127,
        );
        assert_eq!(ids.path("b", "line4"), Some(0));
    }

    #[test]
    fn limits_leave_the_extra_without_an_id() {
        let mut ids = Ids::default();
        ids.assign(&layout(&[("b", &["p1", "p2", "p3"])]), 2);
        assert_eq!(ids.path("b", "p3"), None);
    }

    #[test]
    fn ids_survive_json() {
        let mut ids = Ids::default();
        ids.assign(&layout(&[("b", &["line1", "inet1"])]), 127);
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(
            json,
            r#"{"sites":{"b":0},"paths":{"b":{"inet1":1,"line1":0}}}"#
        );
        assert_eq!(serde_json::from_str::<Ids>(&json).unwrap(), ids);
    }
}
