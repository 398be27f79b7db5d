//! Arbitrary bytes as a received BFD packet: the decoder and the SHA1 check must never
//! panic, whatever decodes must re-encode to what decodes the same, and a session fed the
//! bytes must stay consistent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use probes::session::{Input, Session, SessionConfig};
use probes::wire::{verify_sha1, Packet};

fuzz_target!(|data: &[u8]| {
    let _ = verify_sha1(data, b"key");
    if let Ok(p) = Packet::decode(data) {
        let again = Packet::decode(&p.encode(Some(b"key"))).expect("our encoding decodes");
        assert_eq!((again.state, again.my_disc, again.detect_mult), (p.state, p.my_disc, p.detect_mult));
    }
    let now = Instant::now();
    let cfg = SessionConfig { local_disc: 1, desired_min_tx: Duration::from_millis(10), required_min_rx: Duration::from_millis(10), detect_mult: 3, auth: None };
    let mut s = Session::new(cfg, now);
    s.process(Input::Received(data.to_vec()), now);
    let _ = s.detection_time();
});
