//! The tunnel interface's kernel side over rtnetlink: MTU, up, addresses. Idempotent, so
//! an adopted interface is brought to the config without disturbing what is already right.

use std::io;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::LinkUnspec;

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Sets `name`'s MTU, adds `addresses` (replacing equal ones) and brings it up.
pub async fn configure(name: &str, mtu: u16, addresses: &[IpNet]) -> io::Result<u32> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(conn);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| err(&format!("finding {name}"), e))?
            .ok_or_else(|| err(name, "no such interface"))?;
        let index = link.header.index;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(u32::from(mtu))
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| err(&format!("setting {name} up with MTU {mtu}"), e))?;
        for a in addresses {
            handle
                .address()
                .add(index, a.addr(), a.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(|e| err(&format!("adding {a} to {name}"), e))?;
        }
        Ok(index)
    }
    .await;
    conn.abort();
    result
}
