//! Checks that need more than one value: references between tables, overlaps, ranges, and
//! the key files on disk. Every problem is collected so the operator fixes them in one go.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use super::error::{ConfigError, Locator};
use super::types::{Config, Prefix};

/// AS_TRANS (RFC 6793) and the reserved ASNs can never be a speaker's own or peer ASN.
const RESERVED_ASNS: [u32; 3] = [0, 23456, u32::MAX];
/// Linux IFNAMSIZ less the terminating NUL.
const IFNAME_MAX: usize = 15;
/// TCP_MD5SIG_MAXKEYLEN in linux/tcp.h.
const MD5_KEY_MAX: usize = 80;

struct Checker<'a> {
    loc: &'a Locator<'a>,
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(self.loc.error(span, message, hint));
    }
}

/// Every check; `key_files`: the key files too (a replay elsewhere has none of them).
pub fn validate(
    cfg: &mut Config,
    loc: &Locator<'_>,
    base_dir: &Path,
    key_files: bool,
) -> Vec<ConfigError> {
    let mut c = Checker {
        loc,
        base_dir,
        errors: Vec::new(),
    };
    check_asns(&mut c, cfg);
    check_names(&mut c, cfg);
    check_references(&mut c, cfg);
    check_interfaces(&mut c, cfg);
    check_prefixes(&mut c, cfg);
    check_lines(&mut c, cfg);
    check_tunnels(&mut c, cfg);
    check_policy(&mut c, cfg);
    if key_files {
        resolve_key_files(&mut c, cfg);
    }
    if let Some(r) = cfg.debug.record.as_mut() {
        if r.is_relative() {
            *r = base_dir.join(&*r);
        }
    }
    c.errors.sort_by_key(|e| (e.line, e.column));
    c.errors
}

fn check_asn(c: &mut Checker<'_>, asn: &Spanned<u32>, what: &str) {
    if RESERVED_ASNS.contains(asn.get_ref()) {
        c.err(
            asn.span(),
            format!("{what} {} is reserved and cannot be used", asn.get_ref()),
            "use the ASN assigned to this gateway or router (private range 64512-65534 or 4200000000-4294967294)",
        );
    }
}

fn check_asns(c: &mut Checker<'_>, cfg: &Config) {
    check_asn(c, &cfg.gateway.asn, "ASN");
    for line in &cfg.lines {
        check_asn(c, &line.peer_asn, "peer ASN");
    }
}

/// Sites share one namespace; lines and tunnels share another, because the CLI names a path.
fn check_names(c: &mut Checker<'_>, cfg: &Config) {
    let sites = cfg.sites.iter().map(|s| &s.name);
    check_unique(c, sites, "site", "give every [[site]] its own name");
    let paths = cfg
        .lines
        .iter()
        .map(|l| &l.name)
        .chain(cfg.tunnels.iter().map(|t| &t.name));
    check_unique(
        c,
        paths,
        "path",
        "lines and tunnels are named in one namespace (the CLI takes a path name): rename one",
    );
    for name in cfg
        .sites
        .iter()
        .map(|s| &s.name)
        .chain(cfg.lines.iter().map(|l| &l.name))
        .chain(cfg.tunnels.iter().map(|t| &t.name))
    {
        let n = name.get_ref();
        if n.is_empty()
            || !n
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            c.err(name.span(), format!("name `{n}` is empty or has characters other than letters, digits, `-`, `_`, `.`"), "names appear in metrics labels and CLI arguments: keep them plain");
        }
    }
}

fn check_unique<'a>(
    c: &mut Checker<'_>,
    names: impl Iterator<Item = &'a Spanned<String>>,
    what: &str,
    hint: &str,
) {
    let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
    for name in names {
        if let Some(first) = seen.get(name.get_ref().as_str()) {
            let (l, col) = line_col(c, first.clone());
            c.err(
                name.span(),
                format!(
                    "duplicate {what} name `{}` (first defined at {l}:{col})",
                    name.get_ref()
                ),
                hint,
            );
        } else {
            seen.insert(name.get_ref(), name.span());
        }
    }
}

fn line_col(c: &Checker<'_>, span: Range<usize>) -> (usize, usize) {
    let e = c.loc.error(span, "", "");
    (e.line, e.column)
}

fn check_references(c: &mut Checker<'_>, cfg: &Config) {
    let known: Vec<&str> = cfg
        .sites
        .iter()
        .map(|s| s.name.get_ref().as_str())
        .collect();
    let refs = cfg
        .lines
        .iter()
        .map(|l| ("line", &l.name, &l.site))
        .chain(cfg.tunnels.iter().map(|t| ("tunnel", &t.name, &t.site)));
    for (kind, name, site) in refs {
        if !known.contains(&site.get_ref().as_str()) {
            c.err(
                site.span(),
                format!(
                    "{kind} `{}` names site `{}`, which is not defined",
                    name.get_ref(),
                    site.get_ref()
                ),
                format!(
                    "define it with [[site]] name = \"{}\", or use one of: {}",
                    site.get_ref(),
                    list_or_none(&known)
                ),
            );
        }
    }
    for site in &cfg.sites {
        let used = cfg
            .lines
            .iter()
            .any(|l| l.site.get_ref() == site.name.get_ref())
            || cfg
                .tunnels
                .iter()
                .any(|t| t.site.get_ref() == site.name.get_ref());
        if !used {
            c.err(
                site.name.span(),
                format!(
                    "site `{}` has no line and no tunnel, so its prefixes cannot be routed",
                    site.name.get_ref()
                ),
                "add a [[line]] or [[tunnel]] with this site, or remove the site",
            );
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "(no site is defined)".to_owned()
    } else {
        names.join(", ")
    }
}

fn check_interfaces(c: &mut Checker<'_>, cfg: &Config) {
    let ifaces = cfg
        .lines
        .iter()
        .map(|l| &l.interface)
        .chain(cfg.tunnels.iter().map(|t| &t.interface));
    let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
    for iface in ifaces {
        let n = iface.get_ref();
        if n.is_empty()
            || n.len() > IFNAME_MAX
            || n.contains(['/', ':'])
            || n.chars().any(char::is_whitespace)
        {
            c.err(
                iface.span(),
                format!("`{n}` is not a valid interface name"),
                "Linux interface names have 1 to 15 characters and no `/`, `:` or spaces",
            );
        }
        if let Some(first) = seen.get(n.as_str()) {
            let (l, col) = line_col(c, first.clone());
            c.err(
                iface.span(),
                format!("interface `{n}` is already used by another path (at {l}:{col})"),
                "every line and tunnel needs its own interface",
            );
        } else {
            seen.insert(n, iface.span());
        }
    }
}

fn check_prefixes(c: &mut Checker<'_>, cfg: &Config) {
    // Every routed prefix, with the owner it belongs to; overlaps between owners mean the
    // same traffic would be claimed twice.
    let mut owned: Vec<(String, &Spanned<Prefix>)> = Vec::new();
    for p in &cfg.gateway.announce {
        owned.push(("the local announcements".to_owned(), p));
    }
    for site in &cfg.sites {
        for p in &site.prefixes {
            owned.push((format!("site `{}`", site.name.get_ref()), p));
        }
        check_inside_aggregates(c, site);
    }
    for (i, (owner, p)) in owned.iter().enumerate() {
        for (other_owner, q) in &owned[..i] {
            if overlaps(p.get_ref().0, q.get_ref().0) {
                let (l, col) = line_col(c, q.span());
                let same = owner == other_owner;
                c.err(
                    p.span(),
                    format!(
                        "prefix {} of {owner} overlaps {} of {other_owner} (at {l}:{col})",
                        p.get_ref(),
                        q.get_ref()
                    ),
                    if same {
                        "list each prefix once and do not nest them"
                    } else {
                        "a prefix may belong to one site (or the local announcements) only"
                    },
                );
            }
        }
    }
}

fn check_inside_aggregates(c: &mut Checker<'_>, site: &super::types::Site) {
    if site.aggregates.is_empty() {
        return;
    }
    for p in &site.prefixes {
        if !site
            .aggregates
            .iter()
            .any(|a| a.get_ref().prefix.0.contains(&p.get_ref().0))
        {
            let aggs: Vec<String> = site
                .aggregates
                .iter()
                .map(|a| a.get_ref().to_string())
                .collect();
            c.err(
                p.span(),
                format!(
                    "prefix {} of site `{}` lies outside its aggregates ({})",
                    p.get_ref(),
                    site.name.get_ref(),
                    aggs.join(", ")
                ),
                "widen an aggregate to cover it, or move the prefix to the site it belongs to",
            );
        }
    }
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b) || b.contains(&a)
}

fn check_lines(c: &mut Checker<'_>, cfg: &Config) {
    let mut seen: HashMap<std::net::IpAddr, &str> = HashMap::new();
    for line in &cfg.lines {
        for n in line.neighbors.get_ref() {
            if let Some(other) = seen.insert(*n, line.name.get_ref()) {
                c.err(
                    line.neighbors.span(),
                    format!("neighbour {n} is also a neighbour of line `{other}`"),
                    "each BGP neighbour address belongs to one line",
                );
            }
        }
        if line.neighbors.get_ref().is_empty() {
            c.err(line.neighbors.span(), format!("line `{}` has no BGP neighbour", line.name.get_ref()), "list the line router's address(es), e.g. neighbors = [\"198.19.11.2\", \"2001:db8:11::2\"]");
        }
        let hold = line.hold_time.0.as_secs_f64();
        if hold != 0.0 && !(3.0..=65535.0).contains(&hold) {
            c.err(
                line.name.span(),
                format!(
                    "line `{}`: hold_time {hold}s is out of range",
                    line.name.get_ref()
                ),
                "RFC 4271 allows 0 (no keepalives) or 3s to 65535s",
            );
        }
        let restart = line.restart_time.0.as_secs_f64();
        if restart > 4095.0 {
            c.err(
                line.name.span(),
                format!(
                    "line `{}`: restart_time {restart}s is out of range",
                    line.name.get_ref()
                ),
                "the graceful restart capability carries 0 to 4095 s",
            );
        }
        for (what, interval) in [
            ("interval", line.bfd.interval.0),
            ("end_to_end_interval", line.bfd.end_to_end()),
        ] {
            if interval.as_micros() < 1000 || interval.as_secs() > 60 {
                c.err(
                    line.name.span(),
                    format!(
                        "line `{}`: BFD {what} {interval:?} is out of range",
                        line.name.get_ref()
                    ),
                    "use 1ms to 60s",
                );
            }
        }
        if *line.bfd.multiplier.get_ref() == 0 {
            c.err(
                line.bfd.multiplier.span(),
                "BFD detect multiplier must not be 0",
                "RFC 5880 §6.8.6 discards packets with multiplier 0; 3 is usual",
            );
        }
        if *line.export.prepend.get_ref() > 10 {
            c.err(line.export.prepend.span(), "more than 10 AS-path prepends", "a few prepends already make a path the last choice; long AS paths get filtered by some networks");
        }
    }
}

fn check_tunnels(c: &mut Checker<'_>, cfg: &Config) {
    for t in &cfg.tunnels {
        if decode_wg_key(t.peer_public_key.get_ref()).is_none() {
            c.err(
                t.peer_public_key.span(),
                "peer_public_key is not a WireGuard key",
                "expected 44 characters of base64 as printed by `wg pubkey`",
            );
        }
        let eps = t.endpoints.get_ref();
        if eps.is_empty() {
            c.err(t.endpoints.span(), format!("tunnel `{}` has no endpoint", t.name.get_ref()), "list the remote gateway's address and port, e.g. endpoints = [\"203.0.113.7:51820\"]");
        }
        if eps.iter().any(|e| e.ip().is_unspecified() || e.port() == 0) {
            c.err(
                t.endpoints.span(),
                "an endpoint has an unspecified address or port 0",
                "give the remote gateway's public address and WireGuard port",
            );
        }
        if *t.weight.get_ref() == 0 || *t.weight.get_ref() > 256 {
            c.err(
                t.weight.span(),
                "tunnel weight must be 1 to 256",
                "the kernel's nexthop group weights are 1 to 256",
            );
        }
        if let Some(mtu) = &t.mtu {
            if !(1280..=9000).contains(mtu.get_ref()) {
                c.err(
                    mtu.span(),
                    format!("MTU {} is out of range", mtu.get_ref()),
                    "use 1280 (the IPv6 minimum) to 9000; 1420 suits a 1500-byte uplink",
                );
            }
        }
    }
}

fn check_policy(c: &mut Checker<'_>, cfg: &Config) {
    let p = &cfg.policy;
    let loss = *p.loss_threshold.get_ref();
    if !(loss > 0.0 && loss < 1.0) {
        c.err(
            p.loss_threshold.span(),
            format!("loss_threshold {loss} is not a fraction between 0 and 1"),
            "write e.g. 0.05 for 5%",
        );
    }
    let d = &p.damping;
    let (reuse, suppress) = (*d.reuse.get_ref(), *d.suppress.get_ref());
    if reuse >= suppress {
        let span = if d.reuse.span().is_empty() {
            d.suppress.span()
        } else {
            d.reuse.span()
        };
        c.err(
            span,
            format!("damping reuse ({reuse}) must be below suppress ({suppress})"),
            "a suppressed line returns once its penalty decays below reuse",
        );
    }
    if d.half_life.0.is_zero() {
        c.err(
            0..0,
            "damping half_life must not be zero",
            "the classic value is \"15m\"",
        );
    } else {
        // RFC 2439 §4.2: the penalty is capped where it decays to `reuse` in max_suppress;
        // a suppress threshold above that cap could never be reached.
        let ceiling = f64::from(reuse)
            * 2f64.powf(d.max_suppress.0.as_secs_f64() / d.half_life.0.as_secs_f64());
        if f64::from(suppress) > ceiling {
            c.err(d.suppress.span(), format!("damping suppress ({suppress}) exceeds the penalty ceiling ({ceiling:.0}) set by reuse, half_life and max_suppress"), "raise max_suppress or lower suppress, or damping never suppresses");
        }
    }
}

/// Makes key paths absolute (relative to the config file) and checks that each key file
/// exists, is private, and holds a usable key.
fn resolve_key_files(c: &mut Checker<'_>, cfg: &mut Config) {
    for line in &mut cfg.lines {
        if let Some(f) = line.md5_key_file.as_mut() {
            if let Some(key) = check_key_file(c, f) {
                let len = key.trim_end_matches(['\n', '\r']).len();
                if len == 0 || len > MD5_KEY_MAX {
                    c.err(
                        f.span(),
                        format!("TCP-MD5 key in {} has {len} bytes", f.get_ref().display()),
                        "RFC 2385 keys on Linux have 1 to 80 bytes",
                    );
                }
            }
        }
    }
    for line in &mut cfg.lines {
        if let Some(auth) = line.bfd.auth.as_mut() {
            if let Some(key) = check_key_file(c, &mut auth.key_file) {
                let len = key.trim_end_matches(['\n', '\r']).len();
                if len == 0 || len > 20 {
                    c.err(
                        auth.key_file.span(),
                        format!(
                            "BFD key in {} has {len} bytes",
                            auth.key_file.get_ref().display()
                        ),
                        "RFC 5880 SHA1 keys have 1 to 20 bytes",
                    );
                }
            }
        }
    }
    for t in &mut cfg.tunnels {
        if let Some(key) = check_key_file(c, &mut t.private_key_file) {
            if decode_wg_key(key.trim()).is_none() {
                c.err(
                    t.private_key_file.span(),
                    format!(
                        "{} does not hold a WireGuard private key",
                        t.private_key_file.get_ref().display()
                    ),
                    "write one with `wg genkey > FILE` (44 characters of base64)",
                );
            }
        }
        if let Some(f) = t.preshared_key_file.as_mut() {
            if let Some(key) = check_key_file(c, f) {
                if decode_wg_key(key.trim()).is_none() {
                    c.err(
                        f.span(),
                        format!(
                            "{} does not hold a WireGuard preshared key",
                            f.get_ref().display()
                        ),
                        "write one with `wg genpsk > FILE`",
                    );
                }
            }
        }
    }
}

fn check_key_file(c: &mut Checker<'_>, file: &mut Spanned<PathBuf>) -> Option<String> {
    let path = c.base_dir.join(file.get_ref());
    *file = Spanned::new(file.span(), path.clone());
    let shown = path.display();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            c.err(file.span(), format!("key file {shown}: {e}"), "create the key file (mode 0600, owned by root or the crosslink user) or fix the path; relative paths are relative to the config file");
            return None;
        }
    };
    if !meta.is_file() {
        c.err(
            file.span(),
            format!("key file {shown} is not a regular file"),
            "point at the file that holds the key",
        );
        return None;
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        c.err(
            file.span(),
            format!("key file {shown} is accessible by group or others (mode {mode:04o})"),
            format!("chmod 600 {shown}"),
        );
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            c.err(
                file.span(),
                format!("key file {shown}: {e}"),
                "the agent must be able to read its key files",
            );
            None
        }
    }
}

/// A WireGuard key is 32 bytes in standard base64 with padding: 44 characters.
pub fn decode_wg_key(s: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    bytes.try_into().ok()
}
