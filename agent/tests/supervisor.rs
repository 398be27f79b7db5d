//! The supervisor driven by typed inputs in virtual time, as the sources, the control
//! socket, a reload and the FIB programmer would send them; the test holds the
//! programmer's end (the wants) and answers for it. The tunnels' interfaces are in the
//! link table it sends, as the links source would: members need no real interface.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crosslink::fib::plan::Members;
use crosslink::routing::{Adopted, Programmed, Wants};
use crosslink::sources::links::Link;
use crosslink::state::AgentState;
use crosslink::supervisor::{self, Input, Inputs, OperatorRequest, Supervisor};
use tokio::sync::{oneshot, watch};

const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

fn config(dir: &Path) -> crosslink::config::Config {
    std::fs::create_dir(dir.join("keys")).unwrap();
    for name in ["t1.key", "t2.key"] {
        let p = dir.join("keys").join(name);
        std::fs::write(&p, KEY).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let tunnel = |name: &str, port: u16| {
        format!(
            r#"
            [[tunnel]]
            name = "{name}"
            site = "b"
            interface = "tun{n}"
            uplink = "up{n}"
            listen_port = {port}
            private_key_file = "keys/{name}.key"
            peer_public_key = "sJ81Fq/D4ftWa7I7V6RLC01HJOfnzkMMuRwFYpWnCXY="
            endpoints = ["198.18.201.{n}:51820"]
            addresses = ["169.254.10{n}.0/31"]
            "#,
            n = &name[1..]
        )
    };
    let src = format!(
        r#"
        [gateway]
        name = "gw"
        asn = 65001
        router_id = "192.0.2.1"
        [control]
        state_file = "{}/operator.json"
        [policy]
        hold_down = "30s"
        [[site]]
        name = "b"
        prefixes = ["198.18.2.0/24"]
        {}
        {}
        "#,
        dir.display(),
        tunnel("t1", 51820),
        tunnel("t2", 51821)
    );
    crosslink::config::parse(&src, Path::new("gw.toml"), dir).unwrap()
}

fn stats(handshake: Option<SystemTime>) -> wg::TunnelStats {
    wg::TunnelStats {
        last_handshake: handshake,
        ..Default::default()
    }
}

/// The tunnels of the one site in the wants, by interface index order of their slots.
fn members(w: &Wants) -> Vec<u8> {
    match &w.sites[0].v4 {
        Members::Set(m) => m.iter().map(|m| m.slot).collect(),
        other => panic!("not a member set: {other:?}"),
    }
}

/// Waits (virtual time, bounded: hold-downs are 30 s) for wants other than the last seen, answering for the
/// programmer as it goes.
async fn next_wants(rx: &mut watch::Receiver<Arc<Wants>>, inputs: &Inputs) -> Arc<Wants> {
    tokio::time::timeout(Duration::from_secs(60), rx.changed())
        .await
        .expect("the supervisor decided within 60 s")
        .unwrap();
    let w = rx.borrow_and_update().clone();
    inputs.send(Input::Programmed(Programmed {
        generation: w.generation,
        switched_at: Some(std::time::Instant::now()),
        repaired: Default::default(),
    }));
    w
}

/// The view once `done` says so (bounded, virtual time).
async fn settled_view(
    views: &mut watch::Receiver<Arc<supervisor::View>>,
    done: impl Fn(&supervisor::View) -> bool,
) -> Arc<supervisor::View> {
    tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let v = views.borrow_and_update().clone();
            if done(&v) {
                return v;
            }
            views.changed().await.unwrap();
        }
    })
    .await
    .expect("the view followed within 1 s")
}

async fn command(
    inputs: &Inputs,
    path: &str,
    c: crosslink::policy::Command,
    force: bool,
) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    inputs.send(Input::Operator(OperatorRequest {
        path: path.into(),
        command: c,
        force,
        by: crosslink::core::caller::Caller::process(Some("alice".into()), 1000, Some(4242)),
        lasting: None,
        reply: tx,
    }));
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("answered within 5 s")
        .unwrap()
}

#[test]
fn inputs_in_decisions_out_in_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(drive(cfg));
}

async fn drive(cfg: crosslink::config::Config) {
    let st = AgentState::new(
        cfg.clone(),
        Path::new("gw.toml"),
        crosslink::state::Now::read(),
    );
    let (inputs, rx) = Inputs::channel();
    let (view_tx, mut views) = supervisor::views(&st);
    let (exports_tx, _exports) = supervisor::exports(&st);
    let (wants_tx, mut wants) = watch::channel(Arc::new(Wants::default()));
    let sup = Supervisor::new(st, rx, view_tx, exports_tx, Some(wants_tx), None, None);
    tokio::spawn(sup.run());

    // Nothing is decided before the kernel's objects of a previous run are read.
    inputs.send(Input::Links {
        table: BTreeMap::from([
            ("tun1".to_owned(), Link { index: 7, up: true }),
            ("tun2".to_owned(), Link { index: 8, up: true }),
        ]),
        followed: true,
    });
    for t in ["t1", "t2"] {
        inputs.send(Input::TunnelStarted {
            name: t.into(),
            retried: false,
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!wants.has_changed().unwrap(), "decided before adopting");
    inputs.send(Input::Adopted(Adopted::default()));
    let now = SystemTime::now();
    inputs.send(Input::TunnelStats(vec![
        ("t1".into(), stats(Some(now))),
        ("t2".into(), stats(Some(now))),
    ]));
    // Both tunnels up: the site is spread over both, as the first programming.
    let mut w = next_wants(&mut wants, &inputs).await;
    for _ in 0..10 {
        if matches!(&w.sites[0].v4, Members::Set(m) if m.len() == 2) {
            break;
        }
        w = next_wants(&mut wants, &inputs).await;
    }
    assert_eq!(members(&w).len(), 2, "{w:?}");
    let both = members(&w);
    assert!(w.wanted.contains(&"198.18.2.0/24".parse().unwrap()));

    // t1 loses its handshake: the next wants leave it out, without a tick in between.
    inputs.send(Input::TunnelStats(vec![
        ("t1".into(), stats(None)),
        ("t2".into(), stats(Some(now))),
    ]));
    let w = next_wants(&mut wants, &inputs).await;
    assert_eq!(members(&w), vec![both[1]], "{w:?}");
    // The view follows the wants (the programmer switches first).
    let view = settled_view(&mut views, |v| {
        v.status.sites[0].paths[0].state == crosslink::control::proto::Health::Down
    })
    .await;
    let t1 = &view.status.sites[0].paths[0];
    assert_eq!(t1.name, "t1");
    assert_eq!(t1.state, crosslink::control::proto::Health::Down, "{t1:?}");
    assert!(view.events.iter().any(|e| e.kind == "tunnel-down"));

    // The guard judges against the state of the moment: t2 is the last path in service.
    use crosslink::policy::Command as C;
    let refused = command(&inputs, "t2", C::Drain, false).await.unwrap_err();
    assert!(refused.contains("no healthy path in service"), "{refused}");
    let unknown = command(&inputs, "t9", C::Drain, true).await.unwrap_err();
    assert!(
        unknown.contains("no line or tunnel named `t9`"),
        "{unknown}"
    );

    // t1 comes back: it waits out its hold-down (30 s, virtual) before it carries again.
    inputs.send(Input::TunnelStats(vec![
        ("t1".into(), stats(Some(SystemTime::now()))),
        ("t2".into(), stats(Some(SystemTime::now()))),
    ]));
    let back = tokio::time::Instant::now();
    let mut w = next_wants(&mut wants, &inputs).await;
    while members(&w).len() < 2 {
        w = next_wants(&mut wants, &inputs).await;
    }
    let waited = back.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(32),
        "{waited:?}"
    );

    // A reload is answered once the kernel has been programmed with it.
    let (tx, ack) = oneshot::channel();
    inputs.send(Input::Config(Box::new(cfg), tx));
    let w = next_wants(&mut wants, &inputs).await;
    assert_eq!(members(&w), both);
    tokio::time::timeout(Duration::from_secs(1), ack)
        .await
        .expect("reload answered after the pass")
        .unwrap();
}
