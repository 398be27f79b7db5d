//! A record of what the engine was given and what it answered, one JSON object per line
//! (`[debug] record = PATH`): the state it started from, every reading of the clocks,
//! every input, and each turn's outputs. `crosslink replay FILE` feeds the same inputs at
//! the same times to a new engine and checks that every turn answers as it did on the
//! host: an incident on a gateway replays on a laptop.
//!
//! The inputs are written in a form of their own (`Rec`) where the sources' types cannot
//! be: an operator's reply channel stays out, a config is its text, and instants are
//! microseconds since the start of the record (an `Instant` means nothing in another
//! process). Plain data (BFD and tunnel counters) is written as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use probes::driver::FarEnd;
use probes::wire::{Diag, State};
use serde::{Deserialize, Serialize};

use super::engine::Outputs;
use super::input::Input;
use crate::core::events::EventKind;
use crate::sources::bfd::{BfdView, Key};
use crate::sources::links::{Link, LinkTable};
use crate::state::{AgentState, Now};

/// One line of a record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entry {
    /// The first line: what the engine started from.
    Start(Box<Start>),
    /// The clocks' reading for what follows.
    Now {
        mono_us: u64,
        wall_us: u64,
    },
    In(Box<Rec>),
    /// The end of a turn (`due`: a deadline had come) and what it answered.
    Turn {
        due: bool,
        out: Out,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    pub version: String,
    /// The config's text and file, as the agent parsed it.
    pub config: String,
    pub config_file: String,
    /// What a previous run left on disk (see `operator_state`).
    pub marks: crate::operator_state::Marks,
    pub standings: crate::operator_state::Standings,
    pub ids: crate::core::ids::Ids,
    /// The wall clock at the start (the monotonic one starts at 0).
    pub wall_us: u64,
    /// A FIB programmer ran; BFD ran, coupled to BGP.
    pub programming: bool,
    pub coupled: bool,
    /// The state's event log at the start ("agent started ...").
    pub events: Vec<(EventKind, Option<String>, String)>,
}

/// An input as written down (see `Input`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rec {
    Link {
        iface: String,
        link: Option<Link>,
    },
    Links {
        table: LinkTable,
        followed: bool,
    },
    BgpNeighbor {
        line: String,
        peer: IpAddr,
    },
    BgpGone {
        peer: IpAddr,
    },
    BgpUp {
        peer: IpAddr,
        peer_asn: u32,
        hold_time: u16,
        families: Vec<String>,
        restart_time: Option<u16>,
    },
    BgpDown {
        peer: IpAddr,
        reason: String,
        graceful_ms: Option<u64>,
    },
    BgpRoutes {
        peer: IpAddr,
        added: Vec<(IpNet, IpAddr)>,
        graceful_shutdown: Vec<IpNet>,
        withdrawn: Vec<IpNet>,
        /// Refused prefixes with the reason's label (and a malformed UPDATE's detail).
        rejected: Vec<(IpNet, String, Option<String>)>,
        over_limit: Option<u32>,
    },
    BgpEndOfRib {
        peer: IpAddr,
        family: String,
    },
    BgpPolled {
        peer: IpAddr,
        state: String,
        last_error: Option<String>,
        established_for_ms: Option<u64>,
        prefixes_received: usize,
        prefixes_rejected: u64,
        prefixes_advertised: usize,
    },
    BfdSession {
        key: Key,
        waiting_for_bgp: bool,
    },
    BfdGone {
        key: Key,
    },
    BfdFollows {
        key: Key,
        id: Option<u32>,
    },
    Bfd(BfdEvent),
    BfdPolled(Vec<probes::driver::SessionStatus>),
    TunnelStarted {
        name: String,
        retried: bool,
    },
    TunnelFailed {
        name: String,
        error: String,
        told: bool,
    },
    TunnelsKept(BTreeSet<String>),
    TunnelStats(Vec<(String, wg::TunnelStats)>),
    Record {
        kind: EventKind,
        path: Option<String>,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Operator {
        path: String,
        command: String,
        force: bool,
        by: crate::core::caller::Caller,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lasting_ms: Option<u64>,
    },
    /// A reload's config text (parsed again on replay, key files left alone).
    Config {
        source: String,
    },
    Adopted {
        members: Vec<(u8, u8, Option<IpAddr>, u32)>,
        carrying: BTreeMap<u8, Vec<u8>>,
    },
    Programmed {
        generation: u64,
        switched_at_us: Option<i64>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        repaired: BTreeMap<String, u64>,
    },
    Stall {
        since_us: i64,
        length: Duration,
    },
}

/// A BFD state change (its last sign of life as an offset, see `Clock`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BfdEvent {
    pub id: u32,
    pub name: String,
    pub peer: IpAddr,
    pub from: State,
    pub to: State,
    pub diag: Diag,
    pub remote_diag: Option<Diag>,
    pub remote_state: Option<State>,
    pub last_up_rx_us: Option<i64>,
    pub far_end: FarEnd,
}

/// What a turn answered, as compared on replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Out {
    /// New wants: their generation and each site's kernel members, as the programmer
    /// would get them (the prefixes by count).
    pub wants: Option<(u64, Vec<String>)>,
    pub exports: Option<BTreeMap<String, String>>,
    pub closes: Vec<IpAddr>,
    pub admin: Vec<(u32, bool)>,
    pub answers: Vec<Result<String, String>>,
    /// The events the turn recorded.
    pub events: Vec<(String, Option<String>, String)>,
    /// What it handed out to be kept on disk.
    pub persist: Option<String>,
    /// The counts it made for the metrics.
    #[serde(default)]
    pub counts: Vec<String>,
}

impl Out {
    /// `events`: those recorded since the last turn.
    pub fn of(out: &Outputs, events: Vec<(String, Option<String>, String)>) -> Out {
        Out {
            wants: out.wants.as_ref().map(|w| {
                let sites = w
                    .sites
                    .iter()
                    .map(|s| {
                        format!(
                            "site {}: {} prefixes; v4 {:?}; v6 {:?}; standby {:?} {:?}; fallback {:?} {:?}",
                            s.index,
                            s.prefixes.len(),
                            s.v4,
                            s.v6,
                            s.standby_v4,
                            s.standby_v6,
                            s.fallback_v4,
                            s.fallback_v6
                        )
                    })
                    .collect();
                (w.generation, sites)
            }),
            exports: out.exports.as_ref().map(|e| {
                e.iter()
                    .map(|(k, v)| (k.clone(), format!("{v:?}")))
                    .collect()
            }),
            closes: out.closes.iter().map(|(p, _)| *p).collect(),
            admin: out.admin.clone(),
            answers: out.answers.iter().map(|(_, a)| a.clone()).collect(),
            events,
            persist: out.persist.as_ref().map(|p| format!("{p:?}")),
            counts: out.counts.iter().map(|c| format!("{c:?}")).collect(),
        }
    }
}

/// Instants as microseconds since the record's start, and back.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn at(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.mono) {
            Some(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            None => -i64::try_from((self.mono - t).as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// The instant `us` after the start. One a record cannot mean (beyond what the
    /// clock can hold) is the start: a replay then answers otherwise and says where.
    pub fn instant(&self, us: i64) -> Instant {
        let d = Duration::from_micros(us.unsigned_abs());
        let t = if us >= 0 {
            self.mono.checked_add(d)
        } else {
            self.mono.checked_sub(d)
        };
        t.unwrap_or(self.mono)
    }

    /// A reading of both clocks; a wall clock past the year 9999 (which no timestamp can
    /// show) is held there.
    pub fn now(&self, mono_us: u64, wall_us: u64) -> Now {
        const LAST_US: u64 = 253_402_300_799_000_000;
        Now {
            mono: self.instant(i64::try_from(mono_us).unwrap_or(i64::MAX)),
            wall: UNIX_EPOCH + Duration::from_micros(wall_us.min(LAST_US)),
        }
    }
}

pub fn wall_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Writes the record as the supervisor goes; a write that fails stops the recording (the
/// agent runs on: a full disk must not stop the routing).
pub struct Recorder {
    out: Option<std::io::BufWriter<std::fs::File>>,
    clock: Clock,
    path: std::path::PathBuf,
    events_seen: u64,
    written: u64,
}

/// A record stops at this size (a day at ~15 inputs a second is well under it).
const MAX_RECORD: u64 = 1 << 30;

impl Recorder {
    /// Starts a record at `path` with the state the engine starts from.
    pub fn start(
        path: &std::path::Path,
        st: &AgentState,
        programming: bool,
        coupled: bool,
    ) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        let now = st.now();
        let mut r = Recorder {
            out: Some(std::io::BufWriter::new(file)),
            clock: Clock {
                mono: now.mono,
                wall: now.wall,
            },
            path: path.to_path_buf(),
            events_seen: st.last_event_seq(),
            written: 0,
        };
        let cfg = st.config();
        let start = Start {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: cfg.source.clone(),
            config_file: st.config_file().display().to_string(),
            marks: st.resumed.clone(),
            standings: st.resumed_standings.clone(),
            ids: st.resumed_ids.clone(),
            wall_us: wall_us(now.wall),
            programming,
            coupled,
            events: st
                .events()
                .map(|e| (e.kind, e.path.clone(), e.message.clone()))
                .collect(),
        };
        r.write(&Entry::Start(Box::new(start)));
        Ok(r)
    }

    fn write(&mut self, e: &Entry) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let mut line = match serde_json::to_vec(e) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "the record stops here");
                self.out = None;
                return;
            }
        };
        line.push(b'\n');
        self.written += line.len() as u64;
        if self.written > MAX_RECORD {
            tracing::warn!(file = %self.path.display(), "the record reached {} MiB and stops here", MAX_RECORD >> 20);
            self.out = None;
            return;
        }
        if let Err(e) = out.write_all(&line) {
            tracing::error!(file = %self.path.display(), error = %e, "the record stops here");
            self.out = None;
        }
    }

    /// Writes the clocks' reading; returns it as the record has it (whole µs), for the
    /// live engine to decide with exactly what a replay will.
    pub fn now(&mut self, now: Now) -> Now {
        let mono_us = u64::try_from(self.clock.at(now.mono)).unwrap_or(0);
        let wall_us = wall_us(now.wall);
        self.write(&Entry::Now { mono_us, wall_us });
        self.clock.now(mono_us, wall_us)
    }

    /// Writes an input; returns it as the record has it (see `now`).
    pub fn input(&mut self, input: Input) -> Input {
        let rec = Rec::of(&input, &self.clock);
        self.write(&Entry::In(Box::new(rec.clone())));
        // An operator's command and a config keep what cannot be written (the reply
        // channel, the parsed config); they hold no time.
        rec.into_input(&self.clock).unwrap_or(input)
    }

    pub fn turn(&mut self, due: bool, out: &Outputs, st: &AgentState) {
        let events = new_events(st, &mut self.events_seen);
        let out = Out::of(out, events);
        self.write(&Entry::Turn { due, out });
        // Whole turns on disk: a crash loses at most the turn under way.
        if let Some(w) = self.out.as_mut() {
            let _ = w.flush();
        }
    }
}

/// The events recorded since `seen` (which moves on).
pub fn new_events(st: &AgentState, seen: &mut u64) -> Vec<(String, Option<String>, String)> {
    let events = st
        .events()
        .filter(|e| e.seq > *seen)
        .map(|e| {
            (
                e.kind.as_str().to_owned(),
                e.path.clone(),
                e.message.clone(),
            )
        })
        .collect();
    *seen = st.last_event_seq();
    events
}

impl BfdView {
    /// A session's view as its source makes it (see `sources::bfd::view`).
    pub(crate) fn recorded(key: &Key, waiting_for_bgp: bool) -> BfdView {
        let mut v = BfdView::fresh(key.0.clone(), key.1, key.2);
        v.waiting_for_bgp = waiting_for_bgp;
        v
    }
}

#[path = "record_conv.rs"]
mod conv;
