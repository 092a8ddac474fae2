//! Real TLS peers for legate's TLS tests: certificates made at test time with rcgen (a CA and
//! the leaves it signs, ECDSA P-256), a blocking rustls client (HTTP/1.1 or raw bytes, with
//! SNI, ALPN and an optional client certificate), an HTTP/2-over-TLS client (hyper on a small
//! runtime), and TLS upstreams that record the SNI they were asked for.
//!
//! Everything uses rustls' aws-lc-rs provider, as legate does.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::admin::HttpResponse;
use crate::upstream::TcpServer;
use crate::TempDir;

/// Bound on every read and write of the blocking TLS client.
const TLS_IO_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A self-signed CA with common name `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (DNS SANs; an entry starting with `spiffe://` becomes a URI SAN, an
    /// IP address an IP SAN),
    /// with common name `common_name`, good for both server and client authentication.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> TestCert {
        self.issue_key(common_name, names, KeyType::EcdsaP256)
    }

    /// As [`Self::issue`], with a key of type `key`.
    pub fn issue_key(&self, common_name: &str, names: &[&str], key: KeyType) -> TestCert {
        let key = match key {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        }
        .expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "legate tests");
        for name in names {
            params.subject_alt_names.push(if name.starts_with("spiffe://") {
                SanType::URI((*name).try_into().expect("URI SAN"))
            } else if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                SanType::IpAddress(ip)
            } else {
                SanType::DnsName((*name).try_into().expect("DNS SAN"))
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            spki_der: key.public_key_der(),
        }
    }
}

/// The key types tests use (ring cannot generate RSA keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA P-256 (`ecdsa_secp256r1_sha256`).
    EcdsaP256,
    /// Ed25519 (`ed25519`).
    Ed25519,
}

impl KeyType {
    fn scheme(self) -> rustls::SignatureScheme {
        match self {
            KeyType::EcdsaP256 => rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
            KeyType::Ed25519 => rustls::SignatureScheme::ED25519,
        }
    }
}

/// A leaf certificate and its private key, PEM.
#[derive(Clone)]
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

impl TestCert {
    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &TempDir, name: &str) -> (String, String) {
        let cert = dir.join(&format!("{name}.crt"));
        let key = dir.join(&format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (path_str(cert), path_str(key))
    }

    /// SHA-256 of the certificate, hex (`verify_certificate_hash`).
    pub fn sha256_hex(&self) -> String {
        ring::digest::digest(&ring::digest::SHA256, &self.der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SHA-256 of the SubjectPublicKeyInfo, base64 (`verify_certificate_spki`).
    pub fn spki_sha256_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &self.spki_der))
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("test key")
    }
}

fn path_str(p: PathBuf) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// A TLS client: trusts `ca`, sends `sni`, offers `alpn`, optionally presents a certificate.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    sni: String,
}

impl TlsClient {
    /// A client trusting `ca` that asks for (and verifies the certificate against) `sni`.
    pub fn new(ca: &TestCa, sni: &str) -> Self {
        Self::build(ca, sni, &[], None)
    }

    /// With ALPN protocols and an optional client certificate.
    pub fn build(ca: &TestCa, sni: &str, alpn: &[&str], client_cert: Option<&TestCert>) -> Self {
        Self::build_with(provider(), ca, sni, alpn, client_cert)
    }

    /// A client that can verify handshake signatures of `key` only: a server with several
    /// certificates must pick that key type.
    pub fn accepting_only(ca: &TestCa, sni: &str, key: KeyType) -> Self {
        let mut restricted = rustls::crypto::aws_lc_rs::default_provider();
        let algorithms = restricted.signature_verification_algorithms;
        let mapping: Vec<_> =
            algorithms.mapping.iter().filter(|(scheme, _)| *scheme == key.scheme()).copied().collect();
        // 'static as rustls wants; a few bytes per test client.
        restricted.signature_verification_algorithms =
            rustls::crypto::WebPkiSupportedAlgorithms { all: algorithms.all, mapping: Vec::leak(mapping) };
        Self::build_with(Arc::new(restricted), ca, sni, &[], None)
    }

    /// A TLS 1.2-only client offering the one cipher suite named (IANA name, as rustls spells
    /// it: `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`).
    pub fn tls12_with_cipher(ca: &TestCa, sni: &str, cipher: &str) -> Self {
        let mut restricted = rustls::crypto::aws_lc_rs::default_provider();
        restricted.cipher_suites.retain(|s| s.suite().as_str() == Some(cipher));
        assert_eq!(restricted.cipher_suites.len(), 1, "unknown cipher suite {cipher}");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert.der().to_vec())).expect("CA into root store");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(restricted))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient { config: Arc::new(config), sni: sni.to_string() }
    }

    fn build_with(
        provider: Arc<rustls::crypto::CryptoProvider>,
        ca: &TestCa,
        sni: &str,
        alpn: &[&str],
        client_cert: Option<&TestCert>,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert.der().to_vec())).expect("CA into root store");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some(cert) => builder.with_client_auth_cert(cert.chain(), cert.private_key()).expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        TlsClient { config: Arc::new(config), sni: sni.to_string() }
    }

    /// Connects and completes the handshake. An error is what the handshake ended with (a
    /// TLS alert from legate, a closed connection, a certificate the client refused).
    pub fn connect(&self, addr: SocketAddr) -> io::Result<TlsStream> {
        self.connect_after(addr, b"")
    }

    /// [`Self::connect`], writing `preamble` in cleartext first (a PROXY protocol header).
    pub fn connect_after(&self, addr: SocketAddr, preamble: &[u8]) -> io::Result<TlsStream> {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.write_all(preamble)?;
        tcp.set_read_timeout(Some(TLS_IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(TLS_IO_TIMEOUT))?;
        let name = ServerName::try_from(self.sni.clone()).map_err(|e| io::Error::other(e.to_string()))?;
        let conn = rustls::ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        // TLS 1.3: the server's verdict on our certificate arrives after our Finished; a
        // zero-byte write and a short read surface an alert here rather than later.
        stream.flush()?;
        Ok(TlsStream { stream })
    }

    /// `GET path` over a new connection with `connection: close`; the response as read to
    /// the end.
    pub fn get(&self, addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
        let mut stream = self.connect(addr)?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n", self.sni);
        stream.write_all(request.as_bytes())?;
        let raw = stream.read_to_end_lenient()?;
        parse_response(&raw)
    }
}

/// A client-side TLS connection (blocking).
pub struct TlsStream {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsStream {
    /// The ALPN protocol agreed, if any.
    pub fn alpn(&self) -> Option<String> {
        self.stream.conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// The TLS version agreed, as Envoy names it (`TLSv1.3`).
    pub fn version(&self) -> String {
        match self.stream.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            other => format!("{other:?}"),
        }
    }

    /// The server's leaf certificate, DER.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.stream.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec())
    }

    /// Reads until the peer closes; an unclean close (no close_notify) after data is not an
    /// error, as HTTP/1.1 with `connection: close` does not need one.
    pub fn read_to_end_lenient(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad =
        || io::Error::new(io::ErrorKind::InvalidData, format!("bad response: {:?}", String::from_utf8_lossy(raw)));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else { break };
        let start = line_end + 2;
        let Some(chunk) = data.get(start..start + size) else { break };
        out.extend_from_slice(chunk);
        data = data.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// `GET path` over HTTP/2 over TLS (ALPN `h2`) with hyper; returns the response and the ALPN
/// protocol agreed.
pub fn h2_tls_get(client: &TlsClient, addr: SocketAddr, path: &str) -> Result<(HttpResponse, Option<String>), String> {
    use http_body_util::{BodyExt, Empty};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut config = (*client.config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let sni = client.sni.clone();
    let path = path.to_string();
    runtime.block_on(async move {
        let call = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let name = ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?;
            let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            let alpn = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
            let (mut sender, connection) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = hyper::Request::get(format!("https://{sni}{path}"))
                .body(Empty::<bytes::Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            Ok((HttpResponse { status, headers, body }, alpn))
        };
        tokio::time::timeout(Duration::from_secs(30), call).await.map_err(|_| "h2 over TLS timed out".to_string())?
    })
}

/// A TLS upstream: for each connection, the handshake with `cert` (and `alpn`), then `serve`
/// on the decrypted stream. Records the SNI of each handshake.
pub struct TlsUpstream {
    server: TcpServer,
    server_names: Arc<Mutex<Vec<Option<String>>>>,
}

impl TlsUpstream {
    /// Answers every HTTP/1.1 request with 200 and body `tag`, then closes.
    pub fn http(cert: &TestCert, tag: &str) -> Self {
        let tag = tag.to_string();
        Self::start(cert, move |stream| {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{tag}", tag.len());
            let _ = stream.write_all(reply.as_bytes());
            let _ = stream.flush();
            stream.conn.send_close_notify();
            let _ = stream.flush();
        })
    }

    /// Writes `tag` and closes (for tcp_proxy).
    pub fn tag(cert: &TestCert, tag: &str) -> Self {
        let tag = tag.to_string();
        Self::start(cert, move |stream| {
            let _ = stream.write_all(tag.as_bytes());
            stream.conn.send_close_notify();
            let _ = stream.flush();
        })
    }

    /// [`Self::http`] that requires a client certificate from `client_ca`, and records its
    /// subject CN in the response body after `tag`.
    pub fn http_requiring_client_cert(cert: &TestCert, client_ca: &TestCa, tag: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(client_ca.cert.der().to_vec())).expect("client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert.chain(), cert.private_key())
            .expect("upstream certificate");
        let tag = tag.to_string();
        Self::start_with_config(Arc::new(config), move |stream| {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{tag}", tag.len());
            let _ = stream.write_all(reply.as_bytes());
            stream.conn.send_close_notify();
            let _ = stream.flush();
        })
    }

    fn start(
        cert: &TestCert,
        serve: impl Fn(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) + Send + Sync + 'static,
    ) -> Self {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(cert.chain(), cert.private_key())
            .expect("upstream certificate");
        Self::start_with_config(Arc::new(config), serve)
    }

    fn start_with_config(
        config: Arc<rustls::ServerConfig>,
        serve: impl Fn(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) + Send + Sync + 'static,
    ) -> Self {
        let server_names = Arc::new(Mutex::new(Vec::new()));
        let names = server_names.clone();
        let server = TcpServer::start(move |tcp| {
            let _ = tcp.set_read_timeout(Some(TLS_IO_TIMEOUT));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else { return };
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                if stream.conn.complete_io(&mut stream.sock).is_err() {
                    return;
                }
            }
            names.lock().expect("names").push(stream.conn.server_name().map(str::to_string));
            serve(&mut stream);
        });
        TlsUpstream { server, server_names }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The SNI of each completed handshake, in order.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server_names.lock().expect("names").clone()
    }
}

impl crate::HttpUpstream {
    /// An HTTPS upstream (hyper over rustls) with `cert`, answering with `handler`; HTTP/2
    /// when `http2` (ALPN `h2` only), else HTTP/1.1 (ALPN `http/1.1`, or none).
    pub fn https(
        cert: &TestCert,
        http2: bool,
        handler: impl Fn(&crate::UpstreamRequest) -> crate::UpstreamAction + Send + Sync + 'static,
    ) -> Self {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(cert.chain(), cert.private_key())
            .expect("upstream certificate");
        config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        Self::start_with(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            http2,
            Box::new(handler),
            Some(Arc::new(config)),
        )
    }
}
