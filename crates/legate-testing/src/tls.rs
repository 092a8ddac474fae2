//! A hand-built TLS 1.3 ClientHello (RFC 8446 §4.1.2) with SNI (RFC 6066 §3) and ALPN
//! (RFC 7301): what `tls_inspector` reads to fill `server_names`, `transport_protocol: tls` and
//! `application_protocols` for filter chain match. No TLS library: the test needs only the
//! first flight's bytes, byte-exact, to also check that the inspector replays them.

fn with_u16_len(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend(with_u16_len(data));
    v
}

/// A ClientHello record with `sni` (if any) and `alpn` protocols (if any).
pub fn tls_client_hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        let mut entry = vec![0u8]; // name_type host_name
        entry.extend(with_u16_len(name.as_bytes()));
        extensions.extend(extension(0x0000, &with_u16_len(&entry)));
    }
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for p in alpn {
            list.push(p.len() as u8);
            list.extend_from_slice(p.as_bytes());
        }
        extensions.extend(extension(0x0010, &with_u16_len(&list)));
    }
    extensions.extend(extension(0x002b, &[0x02, 0x03, 0x04])); // supported_versions: TLS 1.3
    extensions.extend(extension(0x000a, &with_u16_len(&[0x00, 0x1d]))); // supported_groups: x25519

    let mut hello = vec![0x03, 0x03]; // legacy_version TLS 1.2
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37))); // random
    hello.push(0); // legacy_session_id
    hello.extend(with_u16_len(&[0x13, 0x01])); // cipher_suites: TLS_AES_128_GCM_SHA256
    hello.extend([1, 0]); // legacy_compression_methods: null
    hello.extend(with_u16_len(&extensions));

    let mut handshake = vec![0x01]; // client_hello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake, legacy_record_version TLS 1.0
    record.extend(with_u16_len(&handshake));
    record
}
