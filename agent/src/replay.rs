//! `crosslink replay FILE`: a record (`[debug] record`) fed again to a new engine, on any
//! host: the same state to start from, the same inputs at the same times. Every turn must
//! answer as it did where it was recorded (wants, exports, coupling, operators' answers,
//! events); the first that does not is shown beside what was recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::config::Config;
use crate::state::AgentState;
use crate::supervisor::record::{self, Clock, Entry, Out, Rec};
use crate::supervisor::{Engine, Input, OperatorRequest};

/// What a replay went through.
#[derive(Debug)]
pub struct Replayed {
    pub inputs: usize,
    pub turns: usize,
    pub decisions: usize,
    /// The record's length on the monotonic clock.
    pub span: Duration,
}

/// A turn that answered otherwise than recorded.
#[derive(Debug)]
pub struct Differs {
    pub line: usize,
    pub recorded: Out,
    pub replayed: Out,
}

/// The config a record holds (the engine writes no file: what it would keep on disk is
/// one of its outputs, compared like the others).
fn config(src: &str, file: &Path) -> Result<Config, String> {
    let mut cfg = crate::config::parse_recorded(src, file).map_err(|e| e.to_string())?;
    cfg.debug.record = None;
    Ok(cfg)
}

pub fn replay(file: &Path) -> Result<Result<Replayed, Box<Differs>>, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut lines = Lines {
        from: std::io::BufReader::new(f),
        n: 0,
    };
    let name = file.display();
    let entry = |n: usize, l: std::io::Result<String>| -> Result<Entry, String> {
        let l = l.map_err(|e| format!("{name}:{n}: {e}"))?;
        serde_json::from_str(&l).map_err(|e| format!("{name}:{n}: {e}"))
    };
    let Some((n, first)) = lines.next() else {
        return Err(format!("{}: empty", file.display()));
    };
    let Entry::Start(start) = entry(n, first)? else {
        return Err(format!("{}:1: not a record's start", file.display()));
    };
    let config_file = PathBuf::from(&start.config_file);
    let cfg = config(&start.config, &config_file)?;
    let clock = Clock {
        mono: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_micros(start.wall_us),
    };
    let mut st = AgentState::new(cfg, &config_file, clock.now(0, start.wall_us));
    for (kind, path, message) in start.events {
        st.record(kind, path.as_deref(), message);
    }
    st.resumed_ids = start.ids;
    crate::resume(&mut st, start.marks, start.standings);
    let mut seen = st.last_event_seq();
    let mut engine = Engine::new(st, start.programming, start.coupled);
    // Operators and reloads wait for their answers as they did.
    let mut waiting = Vec::new();
    let mut done = Replayed {
        inputs: 0,
        turns: 0,
        decisions: 0,
        span: Duration::ZERO,
    };
    for (n, l) in lines {
        match entry(n, l)? {
            Entry::Start(_) => return Err(format!("{name}:{n}: a second start")),
            Entry::Now { mono_us, wall_us } => {
                let now = clock.now(mono_us, wall_us);
                done.span = now.mono - clock.mono;
                engine.set_now(now);
            }
            Entry::In(rec) => {
                done.inputs += 1;
                let input = input(*rec, &clock, &config_file, &mut waiting)
                    .map_err(|e| format!("{name}:{n}: {e}"))?;
                engine.apply(input);
            }
            Entry::Turn { due, out } => {
                done.turns += 1;
                let o = engine.turn(due);
                done.decisions += usize::from(o.wants.is_some());
                let replayed = Out::of(&o, record::new_events(engine.state(), &mut seen));
                if replayed != out {
                    return Ok(Err(Box::new(Differs {
                        line: n,
                        recorded: out,
                        replayed,
                    })));
                }
            }
        }
    }
    Ok(Ok(done))
}

/// A record's whole lines, numbered from 1; a record still being written ends in the
/// middle of one, which is left out.
struct Lines<R> {
    from: R,
    n: usize,
}

impl<R: std::io::BufRead> Iterator for Lines<R> {
    type Item = (usize, std::io::Result<String>);

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) if !line.ends_with('\n') => None,
            Ok(_) => {
                self.n += 1;
                line.pop();
                Some((self.n, Ok(line)))
            }
            Err(e) => {
                self.n += 1;
                Some((self.n, Err(e)))
            }
        }
    }
}

/// Answers kept open while the replay runs (a closed one is a command given up on).
type Waiting = Vec<Box<dyn std::any::Any>>;

fn input(
    rec: Rec,
    clock: &Clock,
    config_file: &Path,
    waiting: &mut Waiting,
) -> Result<Input, String> {
    Ok(match rec {
        Rec::Operator {
            path,
            command,
            force,
            by,
            lasting_ms,
        } => {
            let command = crate::policy::Command::parse(&command)
                .ok_or_else(|| format!("no operator command {command:?}"))?;
            let (reply, answer) = oneshot::channel();
            waiting.push(Box::new(answer));
            Input::Operator(OperatorRequest {
                path,
                command,
                force,
                by,
                lasting: lasting_ms.map(std::time::Duration::from_millis),
                reply,
            })
        }
        Rec::Config { source } => {
            let (ack, acked) = oneshot::channel();
            waiting.push(Box::new(acked));
            Input::Config(Box::new(config(&source, config_file)?), ack)
        }
        other => other
            .into_input(clock)
            .ok_or("an input the replay cannot make")?,
    })
}
