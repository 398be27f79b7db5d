//! SIGHUP: re-reads the config file and applies the difference to the running agent,
//! touching only what changed. A path whose settings did not change keeps its sessions,
//! its tunnel and its place in the kernel's groups; a changed one is restarted (a new BFD
//! interval or multiplier, or a site's prefixes on a tunnel, are even changed in place);
//! a removed one is first taken out of the groups, then stopped. Policy settings apply
//! from the next pass, keeping each path's hold-down and penalty. A file with errors
//! changes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{self, Config};
use crate::core::caller::Caller;
use crate::core::events::EventKind;
use crate::supervisor::{Input, Inputs, CONFIG_WAIT};

/// How the entries of a keyed set differ between two versions.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff<K> {
    pub added: Vec<K>,
    pub removed: Vec<K>,
    pub changed: Vec<K>,
}

impl<K> Diff<K> {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

pub fn diff<K: Ord + Clone, A, B>(
    old: &BTreeMap<K, A>,
    new: &BTreeMap<K, B>,
    same: impl Fn(&A, &B) -> bool,
) -> Diff<K> {
    Diff {
        added: new
            .keys()
            .filter(|k| !old.contains_key(k))
            .cloned()
            .collect(),
        removed: old
            .keys()
            .filter(|k| !new.contains_key(k))
            .cloned()
            .collect(),
        changed: old
            .iter()
            .filter(|(k, a)| new.get(*k).is_some_and(|b| !same(a, b)))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// The parts of the agent a reload reconfigures.
pub struct Parts<'a> {
    pub bgp: &'a mut crate::sources::bgp::Sessions,
    pub tunnels: &'a mut crate::sources::tunnels::Tunnels,
    pub bfd: Option<&'a mut crate::sources::bfd::Sessions>,
    /// How each line should be announced, as the supervisor last said.
    pub exports: &'a crate::supervisor::Exports,
}

/// Puts `cfg` in force in the supervisor and waits (bounded) until the kernel has been
/// programmed with it.
async fn put_in_force(inputs: &Inputs, cfg: Config) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    inputs.send(Input::Config(Box::new(cfg), tx));
    if tokio::time::timeout(CONFIG_WAIT, rx).await.is_err() {
        tracing::warn!("route programming did not pass within {CONFIG_WAIT:?}; reloading anyway");
    }
}

/// The reload's journal record with fields of its own, as for every operator's command
/// (see `supervisor::operator::audit`).
fn audit(by: &Caller, result: &str) {
    tracing::info!(
        target: "crosslink::audit",
        command = "reload",
        user = %by.user,
        uid = by.uid,
        pid = by.pid,
        result,
        "reload by {by}: {result}"
    );
}

/// What a reload put in force.
pub struct Reloaded {
    pub config: Config,
    /// The file's text, which the next reload compares against.
    pub source: String,
    /// What changed and what was done, as logged and recorded.
    pub summary: String,
}

/// Applies `config_file` to the running agent; `running` is the source it runs with.
/// Returns what is now in force, or the file's errors (FILE:LINE:COLUMN) when it has any:
/// then nothing changed.
pub async fn reload(
    config_file: &Path,
    running: &str,
    parts: Parts<'_>,
    in_force: &Config,
    inputs: &Inputs,
    by: &Caller,
) -> Result<Reloaded, String> {
    let source = std::fs::read_to_string(config_file).unwrap_or_default();
    let cfg = match config::load(config_file) {
        Err(errs) => {
            tracing::error!("reload refused, config unchanged:\n{errs}");
            audit(by, "refused");
            let errs = errs.to_string();
            let msg = format!("reload by {by} refused: {errs}");
            inputs.record_by(EventKind::ReloadRefused, None, msg, Some(&by.user));
            return Err(errs);
        }
        Ok(cfg) => cfg,
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let changed = config::changes(running, &source);
    let pending = config::needs_restart(running, &source);
    // The routes first: removed paths leave the groups before their sessions end, so
    // their traffic moves while they still carry it (make before break).
    let mut cfg_in_force = cfg;
    if !pending.is_empty() {
        // What a reload cannot change stays as it runs until the restart.
        cfg_in_force.control = in_force.control.clone();
        cfg_in_force.metrics = in_force.metrics.clone();
    }
    put_in_force(inputs, cfg_in_force.clone()).await;

    let mut done = Vec::new();
    if let Some(bfd) = parts.bfd.as_deref() {
        done.extend(bfd.prune(&cfg_in_force));
    }
    done.extend(parts.tunnels.apply(&cfg_in_force).await);
    done.extend(parts.bgp.apply(&cfg_in_force, inputs).await);
    if let Some(bfd) = parts.bfd {
        done.extend(bfd.apply(&cfg_in_force).await);
    }
    let exports = parts
        .bgp
        .sync_exports(&cfg_in_force, &parts.exports.borrow().clone(), inputs)
        .await;
    if !exports.is_empty() {
        done.push(format!("announcements updated on {}", exports.join(", ")));
    }
    let mut msg = if changed.is_empty() {
        "config reloaded: nothing changed".to_owned()
    } else {
        format!("config reloaded: {} changed", changed.join(", "))
    };
    if !done.is_empty() {
        msg.push_str(&format!("; {}", done.join("; ")));
    }
    if !pending.is_empty() {
        msg.push_str(&format!(
            "; apply only at the next restart: {}",
            pending.join(", ")
        ));
    }
    tracing::info!("{msg}");
    audit(by, "accepted");
    let logged = format!("{msg} (by {by})");
    inputs.record_by(EventKind::Reload, None, logged, Some(&by.user));
    Ok(Reloaded {
        config: cfg_in_force,
        source,
        summary: msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{key_dir, parse_in, EXAMPLE};

    /// The example with `edit` applied, parsed with its key files in `dir`.
    fn example(dir: &Path, edit: impl FnOnce(&str) -> String) -> Config {
        parse_in(dir, &edit(EXAMPLE)).unwrap()
    }

    fn bfd_plan(
        old: &Config,
        new: &Config,
    ) -> Vec<(String, bool, Option<crate::sources::bfd::Change>)> {
        let key = |s: &probes::driver::SessionSpec| (s.name.clone(), s.peer, s.multihop);
        let o: BTreeMap<_, _> = crate::sources::bfd::specs(old)
            .into_iter()
            .map(|s| (key(&s), s))
            .collect();
        let n: BTreeMap<_, _> = crate::sources::bfd::specs(new)
            .into_iter()
            .map(|s| (key(&s), s))
            .collect();
        let d = diff(&o, &n, |a, b| a == b);
        assert!(d.added.is_empty() && d.removed.is_empty(), "{d:?}");
        d.changed
            .iter()
            .map(|k| (k.0.clone(), k.2, crate::sources::bfd::change(&o[k], &n[k])))
            .collect()
    }

    #[test]
    fn new_bfd_timers_retime_the_sessions_in_place_and_touch_no_other() {
        let dir = key_dir();
        let old = example(dir.path(), str::to_owned);
        // line2 (second `interval = "100ms"`) to 50 ms x 5.
        let new = example(dir.path(), |s| {
            let at = s.rfind("interval = \"100ms\"").unwrap();
            format!(
                "{}interval = \"50ms\"\nmultiplier = 5{}",
                &s[..at],
                &s[at..]
                    .replacen("interval = \"100ms\"", "", 1)
                    .replacen("multiplier = 3", "", 1)
            )
        });
        let plan = bfd_plan(&old, &new);
        let timers = Some(crate::sources::bfd::Change::Timers);
        // line2's two neighbours and its end-to-end session; the tunnels probe at the
        // site's fastest line rate, now line2's.
        let line2: Vec<_> = plan.iter().filter(|c| c.0 == "line2").collect();
        assert_eq!(line2.len(), 3, "{plan:?}");
        assert!(plan.iter().all(|c| c.2 == timers), "{plan:?}");
        assert!(plan.iter().all(|c| c.0 != "line1"), "{plan:?}");
        assert_eq!(plan.iter().filter(|c| c.0.starts_with("inet")).count(), 2);

        // A BFD key is a new session.
        let keyed = example(dir.path(), |s| {
            s.replacen(
                "multiplier = 3\n",
                "multiplier = 3\nauth = { type = \"keyed-sha1\", key_file = \"keys/line1.md5\" }\n",
                1,
            )
        });
        let plan = bfd_plan(&old, &keyed);
        assert_eq!(plan.len(), 2, "line1's neighbours: {plan:?}");
        assert!(plan
            .iter()
            .all(|c| c.0 == "line1" && !c.1 && c.2 == Some(crate::sources::bfd::Change::Replace)));
    }

    /// The end-to-end interval retimes the end-to-end sessions over the line and the
    /// tunnels' (the site's fastest now), not the sessions with the line router.
    #[test]
    fn an_end_to_end_interval_retimes_only_the_end_to_end_sessions() {
        let dir = key_dir();
        let old = example(dir.path(), str::to_owned);
        let new = example(dir.path(), |s| {
            s.replacen(
                "multiplier = 3\n",
                "multiplier = 3\nend_to_end_interval = \"3ms\"\n",
                1,
            )
        });
        let plan = bfd_plan(&old, &new);
        let timers = Some(crate::sources::bfd::Change::Timers);
        assert!(plan.iter().all(|c| c.1 && c.2 == timers), "{plan:?}");
        let mut paths: Vec<&str> = plan.iter().map(|c| c.0.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["inet1", "inet2", "line1"]);
        let e2e = crate::sources::bfd::specs(&new)
            .into_iter()
            .filter(|s| s.multihop && s.name != "line2")
            .map(|s| s.desired_min_tx)
            .collect::<Vec<_>>();
        assert!(
            e2e.iter()
                .all(|&t| t == std::time::Duration::from_millis(3)),
            "{e2e:?}"
        );
    }

    fn bgp_plan(old: &Config, new: &Config) -> Vec<(String, &'static str)> {
        let (o, _) = crate::sources::bgp::wanted(old, false);
        let (n, errors) = crate::sources::bgp::wanted(new, false);
        assert!(errors.is_empty(), "{errors:?}");
        let d = diff(&o, &n, |(ol, oc), (nl, nc)| {
            crate::sources::bgp::unchanged(ol, oc, nl, nc)
        });
        assert!(d.added.is_empty() && d.removed.is_empty(), "{d:?}");
        d.changed
            .iter()
            .map(|p| {
                let ((ol, oc), (nl, nc)) = (&o[p], &n[p]);
                let how = if crate::sources::bgp::import_only(ol, oc, nl, nc) {
                    "refresh"
                } else {
                    "restart"
                };
                (format!("{nl} {p}"), how)
            })
            .collect()
    }

    #[test]
    fn bgp_sessions_restart_only_for_their_own_settings() {
        let dir = key_dir();
        let old = example(dir.path(), str::to_owned);
        let exports = example(dir.path(), |s| s.replace("med = 100", "med = 150"));
        assert!(
            bgp_plan(&old, &exports).is_empty(),
            "announcements change in place"
        );
        let hold = example(dir.path(), |s| {
            s.replace("priority = 20 ", "hold_time = \"30s\"\npriority = 20 ")
        });
        assert_eq!(
            bgp_plan(&old, &hold),
            [
                ("line2 198.19.21.2".to_owned(), "restart"),
                ("line2 2001:db8:21::2".to_owned(), "restart")
            ]
        );
        let priority = example(dir.path(), |s| s.replace("priority = 20 ", "priority = 5 "));
        assert!(
            bgp_plan(&old, &priority).is_empty(),
            "a path's rank is the policy's"
        );
        let wider = example(dir.path(), |s| s.replace("198.18.2.0/23", "198.18.0.0/16"));
        let plan = bgp_plan(&old, &wider);
        // Each session carries both families, so each has the site's bounds.
        assert_eq!(plan.len(), 4, "every neighbour of the site: {plan:?}");
        assert!(plan.iter().all(|c| c.1 == "refresh"), "{plan:?}");
    }

    #[test]
    fn a_tunnel_takes_new_prefixes_in_place_and_restarts_for_a_new_endpoint() {
        use crate::sources::tunnels::{change, tunnel_config, Change};
        let dir = key_dir();
        let old = example(dir.path(), str::to_owned);
        let cfgs = |c: &Config| -> Vec<wg::TunnelConfig> {
            c.tunnels
                .iter()
                .map(|t| tunnel_config(c, t).unwrap())
                .collect()
        };
        let more = example(dir.path(), |s| {
            s.replace(
                "prefixes = [\"198.18.2.0/24\"",
                "prefixes = [\"198.18.3.0/24\", \"198.18.2.0/24\"",
            )
        });
        let (a, b) = (cfgs(&old), cfgs(&more));
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| change(x, y) == Some(Change::AllowedIps)));
        let moved = example(dir.path(), |s| {
            s.replacen("198.18.201.1:51820", "198.18.209.1:51820", 1)
        });
        let c = cfgs(&moved);
        assert_eq!(change(&a[0], &c[0]), Some(Change::Restart));
        assert_eq!(
            change(&a[1], &c[1]),
            None,
            "the other tunnel is not touched"
        );
    }

    #[test]
    fn entries_are_added_removed_or_changed_by_key() {
        let old = BTreeMap::from([("line1", 10), ("line2", 20), ("inet1", 1)]);
        let new = BTreeMap::from([("line1", 10), ("line2", 25), ("line3", 30)]);
        let d = diff(&old, &new, |a, b| a == b);
        assert_eq!(
            d,
            Diff {
                added: vec!["line3"],
                removed: vec!["inet1"],
                changed: vec!["line2"],
            }
        );
        assert!(diff(&old, &old, |a, b| a == b).is_empty());
    }
}
