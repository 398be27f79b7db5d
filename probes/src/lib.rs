//! BFD (RFC 5880/5881/5883): the sans-IO codec (`wire`) and session FSM, and the drivers
//! that run single-hop sessions with the line routers and multi-hop end-to-end sessions
//! with the remote gateway.

pub mod driver;
pub mod session;
pub mod wire;
