//! The agent's decision core, sans-IO: typed inputs and the time in, typed verdicts out;
//! no clock, sysfs, syscall or tokio in here, and everything it takes or gives derives
//! serde, so a scenario can be written down and replayed. It grows out of the shared
//! state piece by piece (see ../shared/reviews/agent-architecture.md); so far it holds
//! the time as an input (`now`), how a path's signals make its health (`signals`) and
//! the stable ids of sites and paths the kernel objects are numbered by (`ids`).

pub mod caller;
pub mod events;
pub mod ids;
pub mod now;
pub mod signals;
