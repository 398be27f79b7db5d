//! Byte vectors both ways (RFC layout and packets captured from BIRD 2), every §6.8.6
//! discard rule, SHA1 authentication, and property tests.

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn up_packet() -> Packet {
    Packet {
        diag: Diag::None,
        state: State::Up,
        poll: true,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_disc: 0x0102_0304,
        your_disc: 0x0a0b_0c0d,
        desired_min_tx_us: 10_000,
        required_min_rx_us: 10_000,
        required_min_echo_rx_us: 0,
        auth: None,
    }
}

#[test]
fn plain_packet_bytes_both_ways() {
    // Version 1, diag 0; state Up (3) with Poll; mult 3; length 24.
    let want = hex("20 e0 03 18  01020304  0a0b0c0d  00002710  00002710  00000000");
    assert_eq!(up_packet().encode(None), want);
    assert_eq!(Packet::decode(&want).unwrap(), up_packet());
}

/// `(kind, bytes)` of every packet BIRD sent in the capture (see vectors/capture.py).
fn bird_packets() -> Vec<(String, Vec<u8>)> {
    include_str!("../../tests/vectors/bird-bfd.hex")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, h)| (k.to_owned(), hex(h)))
        .collect()
}

#[test]
fn packets_from_bird_decode_verify_and_reencode() {
    let pkts = bird_packets();
    assert_eq!(pkts.len(), 9);
    for (kind, bytes) in &pkts {
        let p = Packet::decode(bytes).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            (p.state, p.diag, p.detect_mult),
            (State::Down, Diag::None, 3),
            "{kind}"
        );
        assert_eq!(p.your_disc, 0, "nothing heard from us yet");
        // BIRD's slow start: 1 s transmit while not Up (RFC 5880 §6.8.3).
        assert_eq!(
            (p.desired_min_tx_us, p.required_min_rx_us),
            (1_000_000, 100_000)
        );
        match kind.as_str() {
            "plain" => assert!(p.auth.is_none()),
            "keyed-sha1" => {
                let a = p.auth.unwrap();
                assert_eq!((a.kind, a.key_id), (AuthType::KeyedSha1, 7));
                assert!(verify_sha1(bytes, b"crosslink"));
                assert!(!verify_sha1(bytes, b"wrong"));
            }
            "meticulous-keyed-sha1" => {
                let a = p.auth.unwrap();
                assert_eq!((a.kind, a.key_id), (AuthType::MeticulousKeyedSha1, 9));
                assert!(verify_sha1(bytes, b"crosslink"));
            }
            other => panic!("unknown kind {other}"),
        }
        // Our encoder computes the same digest over the same fields.
        assert_eq!(&p.encode(Some(b"crosslink")), bytes, "{kind}");
    }
    // BIRD advances the sequence number with each packet, also for plain Keyed SHA1.
    let seqs: Vec<u32> = pkts
        .iter()
        .filter(|(k, _)| k == "meticulous-keyed-sha1")
        .map(|(_, b)| Packet::decode(b).unwrap().auth.unwrap().sequence)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn discard_rules_of_section_6_8_6() {
    let good = up_packet().encode(None);
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    assert_eq!(Packet::decode(&good[..23]), Err(DecodeError::TooShort));
    assert_eq!(
        Packet::decode(&with(0, 0x40)),
        Err(DecodeError::BadVersion(2))
    );
    assert_eq!(Packet::decode(&with(3, 23)), Err(DecodeError::BadLength));
    assert_eq!(
        Packet::decode(&with(3, 40)),
        Err(DecodeError::BadLength),
        "length beyond the payload"
    );
    assert_eq!(
        Packet::decode(&with(2, 0)),
        Err(DecodeError::ZeroDetectMult)
    );
    assert_eq!(Packet::decode(&with(1, 0xe1)), Err(DecodeError::Multipoint));
    let mut zero_mine = good.clone();
    zero_mine[4..8].fill(0);
    assert_eq!(
        Packet::decode(&zero_mine),
        Err(DecodeError::ZeroMyDiscriminator)
    );
    let mut zero_yours = good.clone();
    zero_yours[8..12].fill(0);
    assert_eq!(
        Packet::decode(&zero_yours),
        Err(DecodeError::ZeroYourDiscriminator),
        "Up with your discriminator 0"
    );
    zero_yours[1] = 0x40; // Down: your discriminator may be 0
    assert!(Packet::decode(&zero_yours).is_ok());
    // A bit set with too short a section, or an auth type we do not support.
    assert_eq!(Packet::decode(&with(1, 0xe4)), Err(DecodeError::BadLength));
    let mut simple = with(1, 0xc4);
    simple.extend_from_slice(&hex("01 05 01 61 62"));
    simple[3] = 29;
    assert_eq!(
        Packet::decode(&simple),
        Err(DecodeError::UnsupportedAuthType(1))
    );
    // Trailing bytes beyond the length field are ignored (the length rules).
    let mut padded = good.clone();
    padded.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(Packet::decode(&padded).unwrap(), up_packet());
}

#[test]
fn sha1_digest_covers_the_whole_packet() {
    let mut p = up_packet();
    p.auth = Some(Auth {
        kind: AuthType::MeticulousKeyedSha1,
        key_id: 1,
        sequence: 42,
        digest: [0; 20],
    });
    let bytes = p.encode(Some(b"s3cret"));
    assert_eq!(bytes.len(), MAX_LEN);
    assert!(verify_sha1(&bytes, b"s3cret"));
    let mut tampered = bytes.clone();
    tampered[16] ^= 1; // required min rx
    assert!(!verify_sha1(&tampered, b"s3cret"));
    let back = Packet::decode(&bytes).unwrap();
    assert_eq!(back.auth.unwrap().sequence, 42);
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    (
        0u8..=8,
        0u8..4,
        any::<[bool; 4]>(),
        1u8..,
        1u32..,
        any::<u32>(),
        any::<[u32; 3]>(),
        prop::option::of((any::<bool>(), any::<u8>(), any::<u32>())),
    )
        .prop_map(
            |(diag, state, [poll, fin, cpi, demand], mult, mine, yours, [tx, rx, echo], auth)| {
                let state = State::from_bits(state);
                let your_disc = if matches!(state, State::Up | State::Init) {
                    yours.max(1)
                } else {
                    yours
                };
                Packet {
                    diag: Diag::from_bits(diag),
                    state,
                    poll,
                    fin,
                    cpi,
                    demand,
                    detect_mult: mult,
                    my_disc: mine,
                    your_disc,
                    desired_min_tx_us: tx,
                    required_min_rx_us: rx,
                    required_min_echo_rx_us: echo,
                    auth: auth.map(|(meticulous, key_id, sequence)| Auth {
                        kind: if meticulous {
                            AuthType::MeticulousKeyedSha1
                        } else {
                            AuthType::KeyedSha1
                        },
                        key_id,
                        sequence,
                        digest: [0; 20],
                    }),
                }
            },
        )
}

proptest! {
    #[test]
    fn packets_round_trip(p in arb_packet()) {
        let bytes = p.encode(Some(b"k"));
        let mut back = Packet::decode(&bytes).unwrap();
        if p.auth.is_some() {
            prop_assert!(verify_sha1(&bytes, b"k"));
            back.auth.as_mut().unwrap().digest = [0; 20];
        }
        prop_assert_eq!(back, p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = Packet::decode(&b);
        let _ = verify_sha1(&b, b"k");
    }
}
