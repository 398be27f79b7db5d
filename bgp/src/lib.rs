//! BGP-4 speaker for the dedicated-line routers (RFC 4271, MP-BGP, 4-octet ASN, TCP-MD5).
//!
//! This crate will own the sans-IO codec (`wire`), the session FSM and the tokio session
//! driver. It is empty until the BGP issue lands: the agent reports BGP state as `unknown`
//! rather than pretending a session exists.
