//! One test per error class, each starting from the shipped example so the example itself
//! stays valid.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

pub(crate) const EXAMPLE: &str = include_str!("../../../examples/crosslink.toml");
const WG_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

/// A directory holding the example's key files with the modes the agent demands.
pub(crate) fn key_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("keys")).unwrap();
    for (name, content) in [
        ("line1.md5", "s3cret\n"),
        ("inet1.key", WG_KEY),
        ("inet2.key", WG_KEY),
    ] {
        let p = dir.path().join("keys").join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// Gateway `gw` with site `b` (198.18.2.0/24) and its line `l1` to 192.0.2.2 on
/// `interface`, then `more` (further TOML tables): the small config the agent's unit
/// tests build their state from.
pub(crate) fn one_line_site(interface: &str, more: &str) -> Config {
    let src = format!(
        r#"
        [gateway]
        name = "gw"
        asn = 65001
        router_id = "192.0.2.1"
        [[site]]
        name = "b"
        prefixes = ["198.18.2.0/24"]
        [[line]]
        name = "l1"
        site = "b"
        interface = "{interface}"
        neighbors = ["192.0.2.2"]
        peer_asn = 65101
        {more}
        "#
    );
    parse(&src, Path::new("t.toml"), Path::new("/nonexistent")).unwrap()
}

pub(crate) fn parse_in(dir: &Path, src: &str) -> Result<Config, ConfigErrors> {
    parse(src, Path::new("gw.toml"), dir)
}

/// Parses `src` and returns its only error.
fn one_error(src: &str) -> ConfigError {
    let dir = key_dir();
    let errs = parse_in(dir.path(), src)
        .expect_err("config must be refused")
        .0;
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:#?}");
    errs.into_iter().next().unwrap()
}

/// 1-based line and column of the first occurrence of `needle` in `src`.
fn pos(src: &str, needle: &str) -> (usize, usize) {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in source"));
    let line = src[..at].matches('\n').count() + 1;
    let col = at - src[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn replace(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "`{from}` not in example");
    EXAMPLE.replacen(from, to, 1)
}

#[test]
fn example_is_valid_and_resolves_key_paths() {
    let dir = key_dir();
    let cfg = parse_in(dir.path(), EXAMPLE).expect("example must be valid");
    assert_eq!(cfg.gateway.name, "gwa");
    assert_eq!(cfg.sites.len(), 1);
    assert_eq!(cfg.lines.len(), 2);
    assert_eq!(cfg.tunnels.len(), 2);
    assert_eq!(cfg.paths_of("cloud-b").count(), 4);
    let md5 = cfg.lines[0].md5_key_file.as_ref().unwrap().get_ref();
    assert_eq!(md5, &dir.path().join("keys/line1.md5"));
    assert_eq!(cfg.lines[1].bfd.interval.0.as_millis(), 100);
    assert_eq!(cfg.lines[1].export.communities.len(), 2);
}

#[test]
fn syntax_error_is_located() {
    let src = replace("asn = 65001", "asn = = 65001");
    let e = one_error(&src);
    assert_eq!(e.line, pos(&src, "asn = =").0);
    assert!(e.hint.contains("syntax"), "{e}");
}

#[test]
fn unknown_key_is_located() {
    let src = replace("priority = 10", "priorty = 10");
    let e = one_error(&src);
    assert_eq!((e.line, e.column), pos(&src, "priorty"));
    assert!(e.message.contains("unknown field `priorty`"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let src = replace("peer_asn = 65101", "peer_asn = \"65101\"");
    let e = one_error(&src);
    assert_eq!((e.line, e.column), pos(&src, "\"65101\""));
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn bad_values_are_located() {
    for (from, to, needle, says) in [
        (
            "hold_down = \"30s\"",
            "hold_down = \"30 parsecs\"",
            "\"30 parsecs\"",
            "not a duration",
        ),
        (
            "\"198.18.2.0/24\", \"2001:db8:b::/64\"]",
            "\"198.18.2.7/24\"]",
            "\"198.18.2.7/24\"",
            "host bits",
        ),
        (
            "\"teardown\"",
            "\"explode\"",
            "\"explode\"",
            "unknown variant",
        ),
    ] {
        let src = replace(from, to);
        let e = one_error(&src);
        assert_eq!((e.line, e.column), pos(&src, needle), "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn missing_site_is_reported_at_the_reference() {
    let src = replace(
        "site = \"cloud-b\"\ninterface = \"line2\"",
        "site = \"cloud-c\"\ninterface = \"line2\"",
    );
    let e = one_error(&src);
    assert_eq!((e.line, e.column), pos(&src, "\"cloud-c\""));
    assert!(e.message.contains("not defined"), "{e}");
    assert!(
        e.hint.contains("cloud-b"),
        "hint lists the known sites: {e}"
    );
}

#[test]
fn duplicate_path_names_are_reported() {
    // A tunnel may not take a line's name: the CLI addresses both by name.
    let src = replace("name = \"inet2\"", "name = \"line1\"");
    let e = one_error(&src);
    assert_eq!(
        (e.line, e.column),
        pos(
            &src,
            "\"line1\"\nsite = \"cloud-b\"\ninterface = \"xl-gwa-b2\""
        )
    );
    assert!(e.message.contains("duplicate path name `line1`"), "{e}");
    assert!(
        e.message
            .contains(&format!("{}:", pos(&src, "\"line1\"").0)),
        "points at the first: {e}"
    );
}

#[test]
fn overlapping_site_prefixes_are_reported() {
    let src = replace(
        "announce = [\"198.18.1.0/24\"",
        "announce = [\"198.18.2.128/25\"",
    );
    let dir = key_dir();
    let errs = parse_in(dir.path(), &src).unwrap_err().0;
    let e = errs
        .iter()
        .find(|e| e.message.contains("overlaps"))
        .expect("overlap reported");
    assert_eq!((e.line, e.column), pos(&src, "\"198.18.2.0/24\""));
    assert!(e.message.contains("198.18.2.128/25"), "{e}");
}

#[test]
fn prefix_outside_aggregates_is_reported() {
    let src = replace(
        "\"198.18.2.0/24\", \"2001:db8:b::/64\"]",
        "\"198.18.2.0/24\", \"2001:db8:c::/64\"]",
    );
    let e = one_error(&src);
    assert_eq!((e.line, e.column), pos(&src, "\"2001:db8:c::/64\""));
    assert!(e.message.contains("outside its aggregates"), "{e}");
}

#[test]
fn missing_key_file_is_reported() {
    let src = replace("keys/line1.md5", "keys/nope.md5");
    let e = one_error(&src);
    assert_eq!((e.line, e.column), pos(&src, "\"keys/nope.md5\""));
    assert!(e.message.contains("nope.md5"), "{e}");
}

#[test]
fn group_readable_key_file_is_refused() {
    let dir = key_dir();
    let key = dir.path().join("keys/inet1.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let errs = parse_in(dir.path(), EXAMPLE).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("mode 0640"), "{}", errs[0]);
    assert!(errs[0].hint.starts_with("chmod 600"), "{}", errs[0]);
    assert_eq!(
        (errs[0].line, errs[0].column),
        pos(EXAMPLE, "\"keys/inet1.key\"")
    );
}

#[test]
fn key_file_content_is_checked() {
    let dir = key_dir();
    fs::write(dir.path().join("keys/inet2.key"), "not a key").unwrap();
    let errs = parse_in(dir.path(), EXAMPLE).unwrap_err().0;
    assert!(
        errs[0]
            .message
            .contains("does not hold a WireGuard private key"),
        "{}",
        errs[0]
    );
}

#[test]
fn range_errors_are_reported() {
    for (from, to, says) in [
        ("asn = 65001", "asn = 23456", "reserved"),
        ("reuse = 750", "reuse = 3000", "must be below suppress"),
        (
            "loss_threshold = 0.05",
            "loss_threshold = 5",
            "not a fraction",
        ),
        (
            "weight = 1\npersistent",
            "weight = 0\npersistent",
            "weight must be 1 to 256",
        ),
        ("hold_time = \"90s\"", "hold_time = \"2s\"", "out of range"),
        (
            "restart_time = \"120s\"",
            "restart_time = \"2h\"",
            "restart_time 7200s is out of range",
        ),
        (
            "interface = \"line2\"",
            "interface = \"line1\"",
            "already used",
        ),
        (
            "neighbors = [\"198.19.21.2\", \"2001:db8:21::2\"]",
            "neighbors = []",
            "no BGP neighbour",
        ),
        (
            "neighbors = [\"198.19.21.2\", \"2001:db8:21::2\"]",
            "neighbors = [\"198.19.11.2\"]",
            "also a neighbour of line `line1`",
        ),
    ] {
        let e = one_error(&replace(from, to));
        assert!(e.message.contains(says), "{to}: {e}");
    }
}

#[test]
fn all_errors_are_reported_at_once_in_file_order() {
    let src =
        replace("peer_asn = 65102", "peer_asn = 0").replace("keys/inet2.key", "keys/gone.key");
    let dir = key_dir();
    let errs = parse_in(dir.path(), &src).unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].line < errs[1].line);
}

#[test]
fn site_without_paths_is_refused() {
    let src = format!("{EXAMPLE}\n[[site]]\nname = \"cloud-c\"\nprefixes = [\"198.18.4.0/24\"]\n");
    let e = one_error(&src);
    assert_eq!((e.line, e.column), pos(&src, "\"cloud-c\""));
    assert!(e.message.contains("no line and no tunnel"), "{e}");
}

#[test]
fn aggregates_bound_the_prefix_length_as_a_prefix_list_does() {
    let dir = key_dir();
    // The example: 198.18.2.0/23 and 2001:db8:b::/48 with no `le`: nothing longer than the
    // site's longest configured prefix of the family (/24, /64).
    let cfg = parse_in(dir.path(), EXAMPLE).unwrap();
    let site = &cfg.sites[0];
    let bounds: Vec<String> = site
        .import_bounds()
        .iter()
        .map(|(n, l)| format!("{n} le {l}"))
        .collect();
    assert_eq!(bounds, ["198.18.2.0/23 le 24", "2001:db8:b::/48 le 64"]);
    let src = replace(
        r#"aggregates = ["198.18.2.0/23", "2001:db8:b::/48"]"#,
        r#"aggregates = ["198.18.2.0/23 le 28", "2001:db8:b::/48"]"#,
    );
    let cfg = parse_in(dir.path(), &src).unwrap();
    assert_eq!(cfg.sites[0].import_bounds()[0].1, 28);
    // Without aggregates the prefixes bound themselves.
    let src = replace(r#"aggregates = ["198.18.2.0/23", "2001:db8:b::/48"]"#, "");
    let cfg = parse_in(dir.path(), &src).unwrap();
    let bounds = cfg.sites[0].import_bounds();
    assert_eq!(bounds[0], ("198.18.2.0/24".parse().unwrap(), 24));
}

#[test]
fn a_bad_le_is_located_with_its_range() {
    for bad in [
        "198.18.2.0/23 le 20",
        "198.18.2.0/23 le 33",
        "198.18.2.0/23 ge 24",
    ] {
        let src = replace(
            r#"aggregates = ["198.18.2.0/23", "2001:db8:b::/48"]"#,
            &format!(r#"aggregates = ["{bad}", "2001:db8:b::/48"]"#),
        );
        let e = one_error(&src);
        assert_eq!(
            (e.line, e.column),
            pos(&src, &format!("\"{bad}\"")),
            "{bad}: {e}"
        );
        let expected = if bad.contains(" le ") {
            "from the aggregate's own (23) to 32"
        } else {
            "not an aggregate"
        };
        assert!(e.message.contains(expected), "{bad}: {e}");
    }
}
