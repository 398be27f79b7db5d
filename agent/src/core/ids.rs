//! Stable ids for sites and paths, from their names: the kernel objects of a site's
//! nexthop groups are numbered by them (`fib::plan`), so an id must not change when the
//! config is reordered (a `[[line]]` moved in a template would otherwise re-point every
//! route, and a restarted agent would credit the wrong path with what the kernel carries).
//!
//! Ids are kept beside the operator's marks. A name keeps its id while it is configured;
//! a newcomer takes the lowest id never handed out (one freed is taken again only when no
//! other is left: the kernel may still hold the objects of the path that had it, and a
//! newcomer must not inherit them); a name that left frees its id. A first start numbers
//! in config order, as the ids by position did before, so the kernel objects of an agent
//! from before stable ids are found where it left them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// At most this many sites (ids 0..=255) and paths per site.
pub const MAX_SITES: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    sites: BTreeMap<String, u8>,
    /// Per site name, its paths' ids.
    paths: BTreeMap<String, BTreeMap<String, u8>>,
    /// Ids freed since they were handed out, taken again last.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    freed_sites: BTreeSet<u8>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    freed_paths: BTreeMap<String, BTreeSet<u8>>,
}

/// The lowest id below `limit` neither taken nor freed, else the lowest freed one (which
/// leaves `freed`).
fn allocate<'a>(
    taken: impl Iterator<Item = &'a u8>,
    freed: &mut BTreeSet<u8>,
    limit: usize,
) -> Option<u8> {
    let mut used = [false; 256];
    for t in taken {
        used[usize::from(*t)] = true;
    }
    let limit = limit.min(256);
    let id = (0..limit)
        .filter(|i| !used[*i])
        .find(|i| !freed.contains(&(*i as u8)))
        .or_else(|| (0..limit).find(|i| !used[*i]))? as u8;
    freed.remove(&id);
    Some(id)
}

/// Keeps the first of each id (in name order) below `limit`: a file edited by hand or
/// written by another version must not make two names share kernel objects, nor a path
/// id spill into the next site's range.
fn sanitize(ids: &mut BTreeMap<String, u8>, limit: usize) {
    let mut seen = BTreeSet::new();
    ids.retain(|_, id| usize::from(*id) < limit && seen.insert(*id));
}

impl Ids {
    /// Gives every site of `layout` (names with their paths, in config order) and every
    /// path an id, keeping those they had, at most `max_paths` per site. Returns whether
    /// anything changed (to be saved). Names beyond the limits get none.
    pub fn assign(&mut self, layout: &[(String, Vec<String>)], max_paths: usize) -> bool {
        let before = self.clone();
        sanitize(&mut self.sites, MAX_SITES);
        for ids in self.paths.values_mut() {
            sanitize(ids, max_paths);
        }
        let gone: Vec<(String, u8)> = self
            .sites
            .iter()
            .filter(|(s, _)| !layout.iter().any(|(n, _)| n == *s))
            .map(|(s, id)| (s.clone(), *id))
            .collect();
        for (site, id) in gone {
            self.sites.remove(&site);
            self.freed_sites.insert(id);
            self.freed_paths.remove(&site);
        }
        self.paths.retain(|s, _| self.sites.contains_key(s));
        for (site, paths) in layout {
            if !self.sites.contains_key(site) {
                let Some(id) = allocate(self.sites.values(), &mut self.freed_sites, MAX_SITES)
                else {
                    continue;
                };
                self.sites.insert(site.clone(), id);
            }
            let ids = self.paths.entry(site.clone()).or_default();
            let freed = self.freed_paths.entry(site.clone()).or_default();
            ids.retain(|p, id| {
                let keep = paths.contains(p);
                if !keep {
                    freed.insert(*id);
                }
                keep
            });
            for p in paths {
                if ids.contains_key(p) {
                    continue;
                }
                if let Some(id) = allocate(ids.values(), freed, max_paths) {
                    ids.insert(p.clone(), id);
                }
            }
        }
        self.freed_paths.retain(|_, f| !f.is_empty());
        *self != before
    }

    /// Fixes `path` of `site` at the ids the kernel's objects show (a previous run's,
    /// which outrank a file that may be stale); a name that held one of them gets another
    /// at the next `assign`.
    pub fn pin(&mut self, site: &str, site_id: u8, path: &str, path_id: u8) {
        if self.sites.get(site) != Some(&site_id) {
            self.sites.retain(|s, id| *id != site_id || s == site);
            self.sites.insert(site.to_owned(), site_id);
        }
        self.freed_sites.remove(&site_id);
        let paths = self.paths.entry(site.to_owned()).or_default();
        paths.retain(|p, id| *id != path_id || p == path);
        paths.insert(path.to_owned(), path_id);
        if let Some(f) = self.freed_paths.get_mut(site) {
            f.remove(&path_id);
        }
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
        // line1 leaves: its id is freed, and a newcomer takes one never used (the
        // kernel may still hold line1's objects); the freed one only when none is left.
        ids.assign(
            &layout(&[("a", &["x"]), ("b", &["line2", "line3", "inet1"])]),
            127,
        );
        assert_eq!(ids.path("b", "line1"), None);
        ids.assign(
            &layout(&[("a", &["x"]), ("b", &["line2", "line3", "inet1", "line4"])]),
            127,
        );
        assert_eq!(ids.path("b", "line4"), Some(4));
        ids.assign(
            &layout(&[
                ("a", &["x"]),
                ("b", &["line2", "line3", "inet1", "line4", "l5"]),
            ]),
            5,
        );
        assert_eq!(
            ids.path("b", "l5"),
            Some(0),
            "the freed id, once none other is left"
        );
        // A site that leaves frees its id the same way.
        ids.assign(&layout(&[("b", &["line2"])]), 127);
        ids.assign(&layout(&[("b", &["line2"]), ("c", &["z"])]), 127);
        assert_eq!(ids.site("c"), Some(2));
    }

    #[test]
    fn a_file_with_clashing_or_out_of_range_ids_is_mended() {
        let mut ids: Ids = serde_json::from_str(
            r#"{"sites":{"a":0,"b":0},"paths":{"a":{"l1":3,"l2":3,"l3":200}}}"#,
        )
        .unwrap();
        ids.assign(&layout(&[("a", &["l1", "l2", "l3"]), ("b", &["m"])]), 127);
        assert_eq!((ids.site("a"), ids.site("b")), (Some(0), Some(1)));
        assert_eq!(ids.path("a", "l1"), Some(3));
        let (l2, l3) = (ids.path("a", "l2").unwrap(), ids.path("a", "l3").unwrap());
        assert!(l2 != 3 && l3 != 3 && l2 != l3 && l3 < 127, "{l2} {l3}");
    }

    #[test]
    fn what_the_kernel_shows_outranks_a_stale_file() {
        let mut ids = Ids::default();
        ids.assign(&layout(&[("b", &["line2", "line1"])]), 127);
        assert_eq!(ids.path("b", "line2"), Some(0));
        // The kernel's objects say a previous run gave line1 id 0.
        ids.pin("b", 0, "line1", 0);
        assert!(ids.assign(&layout(&[("b", &["line2", "line1"])]), 127));
        assert_eq!(ids.path("b", "line1"), Some(0));
        assert_eq!(ids.path("b", "line2"), Some(1));
        ids.pin("c", 0, "x", 0);
        assert_eq!((ids.site("c"), ids.site("b")), (Some(0), None));
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
