//! Feeds arbitrary bytes to the BGP decoder as a peer would: framed by `frame_len`, decoded
//! under both AS widths. Anything that decodes must re-encode and decode to the same thing.
#![no_main]

use bgp::wire::{frame_len, Ctx, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some(len)) = frame_len(buf) {
        let (msg, rest) = buf.split_at(len);
        for (four_octet_as, ibgp) in [(true, false), (false, false), (true, true)] {
            let ctx = Ctx { four_octet_as, ibgp };
            if let Ok(m) = Message::decode(msg, &ctx) {
                if let Ok(bytes) = m.to_bytes(&ctx) {
                    let again = Message::decode(&bytes, &ctx).expect("our own encoding decodes");
                    // Attribute verdicts (discard/withdraw) are not carried on the wire.
                    if let (Message::Update(a), Message::Update(b)) = (&m, &again) {
                        assert_eq!(a.announced().collect::<Vec<_>>(), b.announced().collect::<Vec<_>>());
                        assert_eq!(a.withdrawn_all().collect::<Vec<_>>(), b.withdrawn_all().collect::<Vec<_>>());
                    } else {
                        assert_eq!(m, again);
                    }
                }
            }
        }
        buf = rest;
    }
});
