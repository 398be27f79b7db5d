//! Where the agent's threads run. On a kernel without preemption (PREEMPT_NONE, the usual
//! server build) a woken real-time thread waits until the CPU's current thread leaves the
//! kernel, and one route insert that resizes a large FIB trie can hold a CPU for several
//! milliseconds. Traced in the lab at 3 ms x 3 with a 100,000-prefix table churning: the
//! BFD thread's wake-ups waited up to 5.7 ms behind route programming (ours and BIRD's),
//! enough for false Downs. So the BFD thread keeps one CPU (`[bfd] cpu`) and the control
//! runtime (BGP, route programming) keeps off it. The tunnels' control thread (BFD through
//! the tunnels, real-time too) shares the BFD thread's CPU, for the same reason. The
//! tunnels' data plane is left on every CPU: its time goes to user-space crypto, which a
//! wake-up preempts at once, and a two-core gateway needs both cores for it.

use std::sync::OnceLock;

use probes::driver::priority::{allowed_cpus, pin_current_thread};

use crate::config::BfdCpu;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The BFD thread's CPU.
    pub bfd: Option<usize>,
    /// Where the control runtime's threads run; `None`: unchanged.
    pub control: Option<Vec<usize>>,
    /// What was decided, for the log.
    pub why: String,
}

impl Plan {
    fn unpinned(why: String) -> Plan {
        Plan {
            bfd: None,
            control: None,
            why: format!("BFD thread not pinned: {why}"),
        }
    }
}

/// The plan for a process that may run on `allowed`.
pub fn plan(choice: BfdCpu, allowed: &[usize]) -> Plan {
    let bfd = match choice {
        BfdCpu::None => return Plan::unpinned("[bfd] cpu = \"none\"".into()),
        BfdCpu::Auto if allowed.len() < 2 => {
            return Plan::unpinned(format!("the agent may use {} CPU(s)", allowed.len()))
        }
        BfdCpu::Auto => allowed[allowed.len() - 1],
        BfdCpu::Cpu(c) if !allowed.contains(&c) => {
            return Plan::unpinned(format!(
                "CPU {c} ([bfd] cpu) is not among the agent's CPUs {allowed:?}"
            ))
        }
        BfdCpu::Cpu(c) => c,
    };
    let rest: Vec<usize> = allowed.iter().copied().filter(|&c| c != bfd).collect();
    let why = if rest.is_empty() {
        format!("BFD thread on CPU {bfd}, shared with the rest of the agent (its only CPU)")
    } else {
        format!("BFD thread on CPU {bfd}; BGP and route programming on {rest:?}")
    };
    Plan {
        bfd: Some(bfd),
        control: (!rest.is_empty()).then_some(rest),
        why,
    }
}

static PLAN: OnceLock<Plan> = OnceLock::new();
/// The CPUs the process was given, before any thread was placed.
static GIVEN: OnceLock<Vec<usize>> = OnceLock::new();

/// Decides once for the process, from the CPUs the calling thread may use.
pub fn init(choice: BfdCpu) {
    let plan = PLAN.get_or_init(|| match allowed_cpus() {
        Ok(allowed) => {
            GIVEN.get_or_init(|| allowed.clone());
            plan(choice, &allowed)
        }
        Err(e) => Plan::unpinned(format!("the agent's CPUs are unknown ({e})")),
    });
    if let Some(bfd) = plan.bfd {
        wg::tunnel::keep_control_on(vec![bfd]);
    }
}

/// Puts the calling control thread back on every CPU the process was given (before a
/// re-exec: the new image starts from this thread's set and plans its own).
pub fn leave_control() {
    if let Some(cpus) = GIVEN.get() {
        let _ = pin_current_thread(cpus);
    }
}

/// The BFD thread's CPU, once `init` ran (never in unit tests).
pub fn bfd_cpu() -> Option<usize> {
    PLAN.get().and_then(|p| p.bfd)
}

/// What `init` decided, for the log.
pub fn planned() -> Option<&'static str> {
    PLAN.get().map(|p| p.why.as_str())
}

/// For the control runtime's `on_thread_start`.
pub fn enter_control() {
    if let Some(cpus) = PLAN.get().and_then(|p| p.control.as_deref()) {
        if let Err(e) = pin_current_thread(cpus) {
            tracing::warn!(error = %e, "cannot keep a control thread off the BFD CPU");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_gives_the_last_cpu_to_bfd_and_the_rest_to_control() {
        let p = plan(BfdCpu::Auto, &[0, 1, 2, 3]);
        assert_eq!(p.bfd, Some(3));
        assert_eq!(p.control.as_deref(), Some(&[0, 1, 2][..]));
        // A cpuset that leaves holes (systemd CPUAffinity=, a container).
        let p = plan(BfdCpu::Auto, &[2, 5]);
        assert_eq!((p.bfd, p.control), (Some(5), Some(vec![2])));
    }

    #[test]
    fn one_cpu_or_none_asked_pins_nothing() {
        for p in [plan(BfdCpu::Auto, &[0]), plan(BfdCpu::None, &[0, 1])] {
            assert_eq!((p.bfd, p.control), (None, None), "{}", p.why);
        }
    }

    #[test]
    fn a_named_cpu_is_used_only_when_the_agent_may_run_there() {
        let p = plan(BfdCpu::Cpu(0), &[0, 1]);
        assert_eq!((p.bfd, p.control), (Some(0), Some(vec![1])));
        let p = plan(BfdCpu::Cpu(7), &[0, 1]);
        assert_eq!((p.bfd, p.control), (None, None));
        assert!(p.why.contains("CPU 7"), "{}", p.why);
        // Its only CPU: BFD keeps it, nothing can move off it.
        let p = plan(BfdCpu::Cpu(1), &[1]);
        assert_eq!((p.bfd, p.control), (Some(1), None));
    }
}
