//! What a valid config may still get wrong: accepted (the operator may mean it), but said
//! by `check-config` and logged when the agent starts or reloads.

use super::{Config, ConfigError, Locator};

/// Each with the place in the file it is about.
pub fn warnings(cfg: &Config, loc: &Locator<'_>) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for line in &cfg.lines {
        if !*line.bfd.enabled.get_ref() && line.probe_target.is_none() {
            out.push(loc.error(
                line.bfd.enabled.span(),
                format!(
                    "warning: line {} has neither BFD with its router nor an end-to-end probe: a silent failure of the line is seen only when the BGP hold time ({} s) runs out",
                    line.name.get_ref(),
                    line.hold_time.0.as_secs()
                ),
                "set `probe_target` to the far gateway's address on the line (crosslink there answers BFD), or turn BFD on with the router",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn warnings_of(extra: &str) -> Vec<String> {
        let src = format!(
            r#"
[gateway]
name = "gwa"
asn = 65001
router_id = "192.0.2.1"

[[site]]
name = "b"
prefixes = ["198.18.2.0/24"]

[[line]]
name = "l1"
site = "b"
interface = "eth0"
neighbors = ["192.0.2.2"]
peer_asn = 65101
hold_time = "9s"
{extra}
"#
        );
        let file = Path::new("gw.toml");
        let cfg = super::super::parse(&src, file, Path::new(".")).expect("valid");
        cfg.warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_line_without_bfd_or_probe_is_told_its_detection_time() {
        let w = warnings_of("[line.bfd]\nenabled = false\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("gw.toml:19:11: warning: line l1"), "{w:?}");
        assert!(w[0].contains("BGP hold time (9 s)"), "{w:?}");
        assert!(w[0].contains("probe_target"), "{w:?}");
    }

    #[test]
    fn bfd_or_an_end_to_end_probe_is_enough() {
        assert!(warnings_of("").is_empty());
        let w = warnings_of("probe_target = \"198.19.12.1\"\n[line.bfd]\nenabled = false\n");
        assert!(w.is_empty(), "{w:?}");
    }
}
