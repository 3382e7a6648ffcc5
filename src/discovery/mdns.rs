//! Opt-in DNS-SD over mDNS (RFC 6762/6763): one query for the service types a studio may announce its servers
//! under, answers collected for a short while, each announced `host:port` then probed and fingerprinted like
//! any other address. None of the servers announces itself today, so this is off unless asked for.
//!
//! Only the packet format lives here as plain functions (tested without sending anything); `browse` is the
//! one place that touches the network.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The types browsed: the studio's own and the generic web one.
pub const SERVICE_TYPES: &[&str] = &[
    "_comfyui._tcp.local",
    "_gradio._tcp.local",
    "_litellm._tcp.local",
    "_wangp._tcp.local",
    "_director-link._tcp.local",
    "_http._tcp.local",
];

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
/// The "unicast response" bit of a question's class: answers come straight back to our socket.
const CLASS_IN_QU: u16 = 0x8001;

/// A server a studio announced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Announcement {
    /// "Render box ComfyUI._comfyui._tcp.local"
    pub instance: String,
    pub service_type: String,
    /// The SRV target ("box.local").
    pub host: String,
    pub port: u16,
    pub addresses: Vec<IpAddr>,
    /// TXT `path=` (a base path), when given.
    pub path: Option<String>,
}

impl Announcement {
    /// What to probe: the first address (IPv4 first), else the host name.
    pub fn address(&self) -> String {
        let mut addrs = self.addresses.clone();
        addrs.sort_by_key(|a| a.is_ipv6());
        let host = match addrs.first() {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(IpAddr::V4(a)) => a.to_string(),
            None => self.host.trim_end_matches('.').to_string(),
        };
        let path = self.path.as_deref().unwrap_or("").trim_start_matches('/');
        format!("http://{host}:{}/{path}", self.port)
    }
}

/// One query packet asking for the PTR records of every type in `types`.
pub fn query(types: &[&str]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + types.len() * 32);
    p.extend_from_slice(&[0, 0, 0, 0]); // id 0, flags 0 (a standard query)
    p.extend_from_slice(&(types.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for t in types {
        for label in t.trim_end_matches('.').split('.') {
            let bytes = &label.as_bytes()[..label.len().min(63)];
            p.push(bytes.len() as u8);
            p.extend_from_slice(bytes);
        }
        p.push(0);
        p.extend_from_slice(&TYPE_PTR.to_be_bytes());
        p.extend_from_slice(&CLASS_IN_QU.to_be_bytes());
    }
    p
}

/// A name at `pos`, following compression pointers (bounded, so a hostile loop ends).
fn read_name(packet: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *packet.get(pos)? as usize;
        if len == 0 {
            return Some((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xC0 == 0xC0 {
            let low = *packet.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | low;
            continue;
        }
        let label = packet.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    None
}

fn u16_at(packet: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(pos)?, *packet.get(pos + 1)?]))
}

struct Record {
    name: String,
    kind: u16,
    data_at: usize,
    data_len: usize,
}

/// Every resource record of a response (answers and additionals alike); a malformed packet gives what parsed.
fn records(packet: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let (Some(flags), Some(qd)) = (u16_at(packet, 2), u16_at(packet, 4)) else {
        return out;
    };
    if flags & 0x8000 == 0 {
        return out; // a query, not a response
    }
    let total: usize = [6, 8, 10]
        .iter()
        .filter_map(|&at| u16_at(packet, at))
        .map(usize::from)
        .sum();
    let mut pos = 12;
    for _ in 0..qd {
        let Some((_, next)) = read_name(packet, pos) else {
            return out;
        };
        pos = next + 4;
    }
    for _ in 0..total.min(512) {
        let Some((name, next)) = read_name(packet, pos) else {
            return out;
        };
        let (Some(kind), Some(len)) = (u16_at(packet, next), u16_at(packet, next + 8)) else {
            return out;
        };
        let data_at = next + 10;
        if data_at + usize::from(len) > packet.len() {
            return out;
        }
        out.push(Record {
            name: name.to_ascii_lowercase(),
            kind,
            data_at,
            data_len: usize::from(len),
        });
        pos = data_at + usize::from(len);
    }
    out
}

/// The announcements in one response packet, for the types asked about.
pub fn parse(packet: &[u8], types: &[&str]) -> Vec<Announcement> {
    let recs = records(packet);
    let wanted: Vec<String> = types
        .iter()
        .map(|t| t.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let mut found = BTreeMap::new();
    for r in recs.iter().filter(|r| r.kind == TYPE_PTR && wanted.contains(&r.name)) {
        let Some((instance, _)) = read_name(packet, r.data_at) else {
            continue;
        };
        let key = instance.to_ascii_lowercase();
        let Some(srv) = recs
            .iter()
            .find(|s| s.kind == TYPE_SRV && s.name == key && s.data_len >= 7)
        else {
            continue;
        };
        let (Some(port), Some((host, _))) = (u16_at(packet, srv.data_at + 4), read_name(packet, srv.data_at + 6))
        else {
            continue;
        };
        let host_key = host.to_ascii_lowercase();
        let addresses = recs
            .iter()
            .filter(|a| a.name == host_key)
            .filter_map(|a| {
                let d = packet.get(a.data_at..a.data_at + a.data_len)?;
                match (a.kind, d.len()) {
                    (TYPE_A, 4) => Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))),
                    (TYPE_AAAA, 16) => <[u8; 16]>::try_from(d).ok().map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                    _ => None,
                }
            })
            .collect();
        let path = recs
            .iter()
            .filter(|t| t.kind == TYPE_TXT && t.name == key)
            .flat_map(|t| txt_strings(&packet[t.data_at..t.data_at + t.data_len]))
            .find_map(|s| s.strip_prefix("path=").map(str::to_string));
        found.insert(
            key,
            Announcement {
                instance,
                service_type: r.name.clone(),
                host,
                port,
                addresses,
                path,
            },
        );
    }
    found.into_values().collect()
}

fn txt_strings(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(&len) = data.get(pos) {
        let Some(s) = data.get(pos + 1..pos + 1 + usize::from(len)) else {
            break;
        };
        out.push(String::from_utf8_lossy(s).into_owned());
        pos += 1 + usize::from(len);
    }
    out
}

/// Sends one query to the mDNS group and collects answers for `wait`. Only called when the user opted in.
pub async fn browse(wait: Duration) -> std::io::Result<Vec<Announcement>> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    socket.send_to(&query(SERVICE_TYPES), (MDNS_GROUP, MDNS_PORT)).await?;
    let mut found = BTreeMap::new();
    let mut buf = vec![0u8; 9000];
    let deadline = tokio::time::Instant::now() + wait;
    // Bounded in time (the deadline) and in count (answers kept).
    while found.len() < 256 {
        match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _from))) => {
                for a in parse(&buf[..n], SERVICE_TYPES) {
                    found.insert(a.instance.to_ascii_lowercase(), a);
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(found.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(out: &mut Vec<u8>, n: &str) {
        for l in n.split('.') {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
    }

    fn record(out: &mut Vec<u8>, owner: &[u8], kind: u16, data: &[u8]) {
        out.extend_from_slice(owner);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0x80, 0x01, 0, 0, 0x11, 0x94]);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }

    /// A response like Avahi's: PTR in answers, SRV/TXT/A in additionals, names compressed.
    fn announcement() -> Vec<u8> {
        let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 3];
        let type_at = p.len();
        let mut owner = Vec::new();
        name(&mut owner, "_comfyui._tcp.local");
        let mut instance = vec![10];
        instance.extend_from_slice(b"Render box");
        instance.extend_from_slice(&[0xC0, type_at as u8]);
        record(&mut p, &owner, TYPE_PTR, &instance);
        let instance_at = p.len() - instance.len();
        let ptr = [0xC0, instance_at as u8];
        let mut srv = vec![0, 0, 0, 0, 0x1F, 0xFC]; // priority, weight, port 8188
        name(&mut srv, "box.local");
        record(&mut p, &ptr, TYPE_SRV, &srv);
        let host_at = p.len() - srv.len() + 6;
        record(&mut p, &ptr, TYPE_TXT, b"\x0apath=/comf\x05gpu=1");
        record(&mut p, &[0xC0, host_at as u8], TYPE_A, &[127, 0, 0, 7]);
        p
    }

    #[test]
    fn a_query_asks_for_every_type_with_unicast_answers() {
        let q = query(&["_comfyui._tcp.local"]);
        assert_eq!(&q[4..6], &[0, 1]);
        assert_eq!(&q[12..21], b"\x08_comfyui");
        assert_eq!(&q[q.len() - 4..], &[0, 12, 0x80, 0x01]);
    }

    #[test]
    fn an_announcement_is_read_through_compressed_names() {
        let found = parse(&announcement(), SERVICE_TYPES);
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        assert_eq!(a.instance, "Render box._comfyui._tcp.local");
        assert_eq!((a.host.as_str(), a.port), ("box.local", 8188));
        assert_eq!(a.addresses, vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7))]);
        assert_eq!(a.address(), "http://127.0.0.7:8188/comf");
    }

    #[test]
    fn hostile_packets_give_nothing_and_never_loop() {
        // A pointer to itself, truncations of a good answer, a query instead of a response, random bytes.
        let mut looping = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        looping.extend_from_slice(&[0xC0, 12, 0, 12, 0, 1, 0, 0, 0, 0, 0, 2, 0xC0, 12]);
        assert!(parse(&looping, SERVICE_TYPES).is_empty());
        let good = announcement();
        for cut in 0..good.len() {
            let _ = parse(&good[..cut], SERVICE_TYPES);
        }
        assert!(parse(&query(SERVICE_TYPES), SERVICE_TYPES).is_empty());
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = parse(&bytes, SERVICE_TYPES);
        }
    }
}
