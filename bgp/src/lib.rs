//! BGP-4 speaker for the dedicated-line routers (RFC 4271, MP-BGP, 4-octet ASN, TCP-MD5).
//!
//! `wire` is the sans-IO codec. The session FSM, the Adj-RIB-In with its import filter and
//! the tokio session driver build on it.

pub mod driver;
pub mod fsm;
pub mod rib;
pub mod wire;
