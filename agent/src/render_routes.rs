//! `crosslink routes` as text: per site, its groups with their members by path name, then
//! each prefix with its source and whether the kernel routes it as asked.

use std::fmt::Write as _;

use crosslink::control::routes::{GroupDoc, PrefixDoc, RoutesDoc};

pub fn routes(doc: &RoutesDoc) -> String {
    let mut out = String::new();
    if let Some(e) = &doc.kernel_error {
        let _ = writeln!(out, "(the kernel could not be read: {e})");
    }
    if doc.sites.is_empty() {
        out.push_str("nothing programmed yet\n");
    }
    for s in &doc.sites {
        let _ = writeln!(out, "site {}", s.name);
        for g in &s.groups {
            let _ = writeln!(out, "  {}", group(g));
        }
        let drift = s
            .prefixes
            .iter()
            .filter(|p| p.main_in_kernel == Some(false) || p.fallback_in_kernel == Some(false))
            .count();
        let _ = writeln!(
            out,
            "  {} prefixes{}",
            s.prefixes.len(),
            if drift > 0 {
                format!(", {drift} not in the kernel as asked")
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<8} {:<9} SOURCE",
            "PREFIX", "MAIN", "FALLBACK"
        );
        for p in &s.prefixes {
            let _ = writeln!(
                out,
                "  {:<24} {:<8} {:<9} {}",
                p.prefix,
                verdict(p.main_in_kernel),
                verdict(p.fallback_in_kernel),
                source(p)
            );
        }
        out.push('\n');
    }
    out
}

fn group(g: &GroupDoc) -> String {
    let members = match &g.members {
        None => "(nothing healthy: left as the kernel has it)".to_owned(),
        Some(ms) if ms.is_empty() => "(no path)".to_owned(),
        Some(ms) => ms
            .iter()
            .map(|m| match &m.via {
                Some(via) => format!("{} via {via}", m.path),
                None => format!("{} (tunnel)", m.path),
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "{:<8} {} group {:<10} kernel {:<7} {}",
        g.role,
        g.family,
        g.id,
        verdict(g.in_kernel),
        members
    )
}

fn source(p: &PrefixDoc) -> String {
    let learned: Vec<String> = p
        .learned
        .iter()
        .map(|l| format!("{} {}", l.line, l.neighbor))
        .collect();
    match (p.configured, learned.is_empty()) {
        (true, true) => "configured".to_owned(),
        (true, false) => format!("configured, learned: {}", learned.join(", ")),
        (false, _) => format!("learned: {}", learned.join(", ")),
    }
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "ok",
        Some(false) => "MISSING",
        None => "-",
    }
}
