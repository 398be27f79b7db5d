//! The control socket between the CLI and the running agent.

pub mod client;
pub mod health;
pub mod proto;
pub mod routes;
pub mod server;
pub mod status;
