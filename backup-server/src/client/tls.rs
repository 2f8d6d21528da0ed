//! The client's TLS (docs/protocol.md, "Transport"): TLS 1.3 only with the `ring`
//! provider; backupd is trusted by the pin of its key (`tls_pin`, checked by
//! [`PinVerifier`]) or by a CA file (`tls_ca_file`, the usual WebPKI checks of names and
//! dates); a client certificate when configured. [`Transport`] is the byte stream the
//! client reads and writes, TLS or plain TCP.
//!
//! The handshake's proofs are bound to the TLS session (the exporter,
//! `formats::protocol::handshake::Binding`), so a relay that terminates TLS with a
//! certificate the client was wrongly told to trust still cannot authenticate.

use formats::protocol::handshake::{Binding, BINDING_LEN, TLS_EXPORTER_LABEL};
use formats::protocol::Pin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the backup host trusts one backupd (`[[server]]`'s `tls_pin`, `tls_ca_file`, `tls`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsTrust {
    /// Plain TCP: loopback, or `tls = false` said explicitly.
    #[default]
    Off,
    /// TLS; the server's certificate must carry a key with one of these pins (one, or two
    /// while a key is being replaced: the new pin is added before backupd's key changes and
    /// the old one removed after). Names, dates and issuer are not looked at: the key is the
    /// identity (`backupd keygen` prints its pin). Never empty.
    Pins(Vec<Pin>),
    /// TLS; the server's certificate must chain to one of the CA certificates in this PEM
    /// file, be valid now, and name the host of the server's address.
    CaFile(PathBuf),
}

/// The backup host's own certificate, for a backupd that asks for one
/// (`tls_client_cert_file`, `tls_client_key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM; readable by its owner only.
    pub key_file: PathBuf,
}

/// Everything TLS the client needs for one server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// How the server is trusted; [`TlsTrust::Off`] for plain TCP.
    pub trust: TlsTrust,
    /// The client certificate, if the server asks for one.
    pub client_cert: Option<ClientCert>,
    /// The name the certificate must carry with [`TlsTrust::CaFile`] (the host of the
    /// server's address), also sent as SNI. Empty: the address's IP.
    pub server_name: String,
}

/// The server's key is not the one pinned.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the server's key is {found}, not the pinned {} (tls_pin): not our backupd \
     (a machine in the middle?), or its key was replaced (then set tls_pin to the pin \
     `backupd keygen` printed for the new key)",
    expected.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" or ")
)]
pub struct PinMismatch {
    /// The pins configured.
    pub expected: Vec<Pin>,
    /// The pin of the key the server showed.
    pub found: Pin,
}

/// Checks a server certificate by the pin of its public key; the handshake's signature is
/// still checked with that key (rustls's TLS 1.3 verification), so only the key's holder
/// passes.
#[derive(Debug)]
pub struct PinVerifier {
    pins: Vec<Pin>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// A verifier accepting only a key with one of `pins`.
    pub fn new(pins: Vec<Pin>, provider: Arc<CryptoProvider>) -> PinVerifier {
        PinVerifier { pins, provider }
    }
}

/// The pin of a DER certificate's public key; `None` if it does not parse.
pub fn pin_of_cert(cert: &[u8]) -> Option<Pin> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(Pin::of_spki(parsed.tbs_certificate.subject_pki.raw))
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = pin_of_cert(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if self.pins.contains(&found) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.pins.clone(),
                    found,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration offers TLS 1.3 only.
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The most of a PEM file that is read.
const MAX_PEM_FILE: u64 = 1024 * 1024;

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE).read_to_end(&mut bytes))
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    Ok(bytes)
}

/// The certificates of a PEM file (a CA file), the file named in every error.
pub(crate) fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use std::os::unix::fs::PermissionsExt;
    let p = path.display();
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("TLS client key file {p}: {e}"))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "TLS client key file {p} has mode {mode:04o}: it must be readable by its owner \
             only (chmod 600 {p})"
        ));
    }
    let bytes = read_pem("TLS client key file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("TLS client key file {p}: no private key: {e}"))
}

/// The rustls configuration for `settings` (not [`TlsTrust::Off`]); the message names the
/// file at fault.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 with the ring provider: {e}"))?;
    let builder = match &settings.trust {
        TlsTrust::Off => return Err("TLS is off for this server".into()),
        TlsTrust::Pins(pins) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pins.clone(), provider))),
        TlsTrust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("TLS CA file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("TLS CA file {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match &settings.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let certs = read_certs("TLS client certificate file", &c.cert_file)?;
            let key = read_key(&c.key_file)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "TLS client certificate {} with key {}: {e}",
                    c.cert_file.display(),
                    c.key_file.display()
                )
            })?
        }
    };
    // Every connection a full handshake: the pin (or the CA) is checked each time.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name to ask the server for: the configured name, else the address's IP.
pub fn server_name(settings: &TlsSettings, ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(settings.server_name.clone()).unwrap_or(ServerName::IpAddress(ip.into()))
}

/// A socket that keeps a copy of the first bytes it reads: after a failed TLS handshake
/// they tell a backupd without TLS (its greeting) from anything else.
struct Sniff<'a> {
    sock: &'a mut TcpStream,
    first: Vec<u8>,
}

impl Read for Sniff<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        let keep = n.min(32usize.saturating_sub(self.first.len()));
        self.first.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

impl Write for Sniff<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Why a TLS handshake failed, in the administrator's words.
fn handshake_failure(e: io::Error, first: &[u8]) -> String {
    let greeting = first.len() >= 17
        && first[4] == formats::protocol::kind::GREETING
        && &first[9..17] == formats::protocol::MAGIC;
    if greeting {
        return "this backupd speaks the protocol without TLS (its configuration has no \
                tls_cert_file): give it a key (`backupd keygen`) and its certificate, or set \
                tls = false for this server to send mail in clear"
            .into();
    }
    if let Some(pin) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                o.0.downcast_ref::<PinMismatch>()
            }
            _ => None,
        })
    {
        return format!("TLS handshake: {pin}");
    }
    format!("TLS handshake: {e}")
}

/// The byte stream under the protocol.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS 1.3 over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    /// Runs the TLS handshake on `sock` (its timeouts apply): the stream and the binding
    /// of the protocol's handshake to this session. The error says why, in words.
    pub fn tls(
        mut sock: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(Transport, Binding), String> {
        let mut conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
        let mut sniff = Sniff {
            sock: &mut sock,
            first: Vec::new(),
        };
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sniff) {
                return Err(handshake_failure(e, &sniff.first));
            }
        }
        let ekm = conn
            .export_keying_material([0u8; BINDING_LEN], TLS_EXPORTER_LABEL, None)
            .map_err(|e| format!("TLS: no keying material from the session: {e}"))?;
        Ok((
            Transport::Tls(Box::new(StreamOwned::new(conn, sock))),
            Binding::Tls(ekm),
        ))
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::protocol::Greeting;

    #[test]
    fn a_plain_greeting_where_tls_was_expected_is_named() {
        let mut greeting = Vec::new();
        Greeting {
            min_version: 2,
            max_version: 2,
            nonce: [0; 32],
            server: "backupd".into(),
        }
        .encode(&mut greeting)
        .unwrap();
        let e = io::Error::new(io::ErrorKind::InvalidData, "corrupt message");
        let m = handshake_failure(e, &greeting[..32]);
        assert!(
            m.starts_with("this backupd speaks the protocol without TLS"),
            "{m}"
        );
        // Anything else is TLS's own word.
        let e = io::Error::new(io::ErrorKind::InvalidData, "corrupt message");
        assert_eq!(
            handshake_failure(e, b"* OK IMAP"),
            "TLS handshake: corrupt message"
        );
    }

    #[test]
    fn a_pin_mismatch_names_both_keys_and_the_way_out() {
        let (a, b) = (Pin([1; 32]), Pin([2; 32]));
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch {
                expected: vec![a],
                found: b,
            })),
        ));
        let m = handshake_failure(io::Error::new(io::ErrorKind::InvalidData, inner), b"");
        assert_eq!(
            m,
            format!(
                "TLS handshake: the server's key is {b}, not the pinned {a} (tls_pin): not our \
                 backupd (a machine in the middle?), or its key was replaced (then set tls_pin \
                 to the pin `backupd keygen` printed for the new key)"
            )
        );
        // A certificate that does not parse has no pin.
        assert_eq!(pin_of_cert(b"not a certificate"), None);
    }
}
