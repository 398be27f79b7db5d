//! BFD (RFC 5880/5881/5883): sans-IO codec and session FSM, plus the drivers that run
//! single-hop sessions with the line routers and multi-hop end-to-end sessions with the
//! remote gateway. Empty until the BFD issue lands; the agent reports BFD state as `unknown`.
