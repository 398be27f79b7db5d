//! Who asked: the operator behind a command or a reload, as the control socket learned it
//! from the kernel (`SO_PEERCRED`), or the signal that asked. Every command and reload is
//! logged, journaled and counted with it, accepted or refused.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The user name (`uid:N` when the uid has none), or what asked without a user
    /// (`SIGHUP`).
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl Caller {
    /// A process on the control socket, by its credentials.
    pub fn process(user: Option<String>, uid: u32, pid: Option<i32>) -> Caller {
        Caller {
            user: user.unwrap_or_else(|| format!("uid:{uid}")),
            uid: Some(uid),
            pid,
        }
    }

    /// What asked without a process behind it that the agent can name.
    pub fn named(what: &str) -> Caller {
        Caller {
            user: what.to_owned(),
            uid: None,
            pid: None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user)?;
        match (self.uid, self.pid) {
            (Some(uid), Some(pid)) => write!(f, " (uid {uid}, pid {pid})"),
            (Some(uid), None) => write!(f, " (uid {uid})"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_says_who_and_which_process() {
        let alice = Caller::process(Some("alice".into()), 1000, Some(4242));
        assert_eq!(alice.to_string(), "alice (uid 1000, pid 4242)");
        assert_eq!(
            Caller::process(None, 1234, None).to_string(),
            "uid:1234 (uid 1234)"
        );
        assert_eq!(Caller::named("SIGHUP").to_string(), "SIGHUP");
    }
}
