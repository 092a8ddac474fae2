//! A DNS server on `127.0.0.1:0` (UDP) answering A and AAAA questions from a table the test
//! changes as it goes (RFC 1035 §4): what STRICT_DNS and LOGICAL_DNS clusters resolve against
//! in tests, with a TTL of the test's choosing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct Table {
    /// Lowercased name without the final dot → addresses.
    records: HashMap<String, Vec<IpAddr>>,
    ttl: u32,
}

/// The server; stops on drop.
pub struct DnsServer {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Answers with TTL `ttl` seconds; names not in the table get NXDOMAIN.
    pub fn start(ttl: u32) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS server");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let table = Arc::new(Mutex::new(Table { records: HashMap::new(), ttl }));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, q, s) = (table.clone(), queries.clone(), stop.clone());
        thread::Builder::new()
            .name(format!("dns-{addr}"))
            .spawn(move || {
                let mut buf = [0u8; 512];
                while !s.load(Ordering::SeqCst) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                    q.fetch_add(1, Ordering::SeqCst);
                    let table = t.lock().unwrap();
                    if let Some(reply) = answer(&buf[..n], &table) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
            .expect("spawn DNS server");
        DnsServer { addr, table, queries, stop }
    }

    /// Where it listens (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the addresses `name` resolves to (none: NXDOMAIN).
    pub fn set(&self, name: &str, addresses: &[IpAddr]) {
        let mut table = self.table.lock().unwrap();
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if addresses.is_empty() {
            table.records.remove(&key);
        } else {
            table.records.insert(key, addresses.to_vec());
        }
    }

    /// Questions received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The reply to one query, or `None` for something that is not a standard query.
fn answer(query: &[u8], table: &Table) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    if header[2] & 0x80 != 0 || u16::from_be_bytes([header[4], header[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let records = table.records.get(&labels.join("."));
    let matching: Vec<&IpAddr> = records
        .map(|r| {
            r.iter().filter(|ip| matches!((ip, qtype), (IpAddr::V4(_), TYPE_A) | (IpAddr::V6(_), TYPE_AAAA))).collect()
        })
        .unwrap_or_default();

    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&header[..2]); // id
    let rcode = if records.is_none() { 3 } else { 0 }; // NXDOMAIN for unknown names
    reply.extend_from_slice(&[0x81 | (header[2] & 0x01), 0x80 | rcode]);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(matching.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    reply.extend_from_slice(question);
    for ip in matching {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the name of the question
        let (kind, data) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        reply.extend_from_slice(&kind.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes()); // IN
        reply.extend_from_slice(&table.ttl.to_be_bytes());
        reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
        reply.extend_from_slice(&data);
    }
    Some(reply)
}
