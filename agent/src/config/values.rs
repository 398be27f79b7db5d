//! The config's values with a syntax of their own: prefixes, aggregates, durations and
//! communities, parsed and shown as an operator writes them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An aggregate of a site, with the longest prefix accepted inside it as a prefix-list
/// entry has it: `198.18.0.0/16` or `198.18.0.0/16 le 24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    pub prefix: Prefix,
    pub le: Option<u8>,
}

impl FromStr for Aggregate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        // Errors quote the whole value first: that is how the config error finds it.
        let prefix = |p: &str| p.parse::<Prefix>().map_err(|e| format!("`{s}`: {e}"));
        let (prefix, le) = match words.as_slice() {
            [p] => (p.parse::<Prefix>()?, None),
            [p, "le", n] => {
                let prefix = prefix(p)?;
                let max = if prefix.0.addr().is_ipv4() { 32 } else { 128 };
                let n: u8 = n
                    .parse()
                    .ok()
                    .filter(|n| (prefix.0.prefix_len()..=max).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "`{s}`: `le` must be a length from the aggregate's own ({}) to {max}",
                            prefix.0.prefix_len()
                        )
                    })?;
                (prefix, Some(n))
            }
            _ => {
                return Err(format!(
                    "`{s}` is not an aggregate (expected e.g. 198.18.0.0/16 or 198.18.0.0/16 le 24)"
                ))
            }
        };
        Ok(Aggregate { prefix, le })
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.le {
            Some(n) => write!(f, "{} le {n}", self.prefix),
            None => self.prefix.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Aggregate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IP prefix with no host bits set: `198.18.1.5/24` is refused, not silently truncated,
/// because the operator almost certainly meant something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix(pub IpNet);

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: IpNet = s
            .parse()
            .map_err(|_| format!("`{s}` is not an IP prefix (expected e.g. 198.18.0.0/24)"))?;
        if net.trunc() != net {
            return Err(format!(
                "`{s}` has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Prefix(net))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration written the human way: `"10ms"`, `"30s"`, `"15m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write e.g. \"100ms\" or \"30s\""
            ))
        })
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// A BGP community: standard `ASN:VALUE` (RFC 1997) or large `ASN:A:B` (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a community (expected 65001:100 or 65001:1:2)");
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, v] => Ok(Community::Standard(
                a.parse().map_err(|_| bad())?,
                v.parse().map_err(|_| bad())?,
            )),
            [a, b, c] => Ok(Community::Large(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
                c.parse().map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(a, v) => write!(f, "{a}:{v}"),
            Community::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
