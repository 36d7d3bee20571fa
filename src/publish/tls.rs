//! TLS to the broker (`mqtts://`), with rustls.
//!
//! The server is verified against CA_FILE, or the system's roots when
//! CA_FILE is not set; CERT_FILE and KEY_FILE (PEM) add a client certificate,
//! as AWS IoT Core and most managed brokers require. Everything is read and
//! checked at start-up, so a bad file is a configuration error. A failed
//! handshake is described by its cause (unknown CA, name mismatch, expired,
//! client certificate rejected) rather than rustls's debug text.
//!
//! What it does not do: accept an unverified server. There is no option to
//! turn verification off.

/// A configuration problem: which key, and why.
pub type KeyError = (&'static str, String);

#[cfg(feature = "tls")]
mod with_tls {
    use super::KeyError;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::path::Path;
    use std::sync::Arc;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    /// A TLS connection to the broker.
    pub type Stream = tokio_rustls::client::TlsStream<TcpStream>;

    /// The TLS handshake over a connected socket.
    pub async fn connect(client: &Client, tcp: TcpStream) -> std::io::Result<Stream> {
        client.connector.connect(client.server_name.clone(), tcp).await
    }

    /// What a connection needs: the connector and the name to verify.
    #[derive(Clone)]
    pub struct Client {
        pub connector: TlsConnector,
        pub server_name: ServerName<'static>,
    }

    impl core::fmt::Debug for Client {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "TLS to {:?}", self.server_name)
        }
    }

    /// Build the TLS client for broker `host` from the CA_FILE, CERT_FILE and
    /// KEY_FILE values (empty when not set).
    pub fn client(host: &str, ca_file: &str, cert_file: &str, key_file: &str) -> Result<Client, KeyError> {
        let mut roots = rustls::RootCertStore::empty();
        if ca_file.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err((
                    "CA_FILE",
                    "not set, and no system CA certificates were found".into(),
                ));
            }
        } else {
            for cert in certificates(ca_file).map_err(|e| ("CA_FILE", e))? {
                roots
                    .add(cert)
                    .map_err(|e| ("CA_FILE", format!("not a usable CA certificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("BROKER", format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match (cert_file.is_empty(), key_file.is_empty()) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => {
                let chain = certificates(cert_file).map_err(|e| ("CERT_FILE", e))?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|e| ("KEY_FILE", format!("no PEM private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ("KEY_FILE", format!("does not match CERT_FILE: {e}")))?
            }
            (false, true) => return Err(("KEY_FILE", "missing: CERT_FILE needs its private key".into())),
            (true, false) => return Err(("CERT_FILE", "missing: KEY_FILE needs its certificate".into())),
        };
        let server_name = ServerName::try_from(host.to_string()).map_err(|_| {
            (
                "BROKER",
                format!("'{host}' is not a host name or address TLS can verify"),
            )
        })?;
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        if !Path::new(path).is_file() {
            return Err("cannot read: no such file".into());
        }
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        Ok(certs)
    }

    /// The cause of a failed TLS handshake or read, in an operator's words.
    pub fn describe(error: &std::io::Error) -> String {
        use rustls::{AlertDescription, CertificateError, Error};
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
            return error.to_string();
        };
        match tls {
            Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "TLS: unknown CA: the broker's certificate is not signed by CA_FILE (or the system roots)"
                    .into()
            }
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => "TLS: name mismatch: the broker's certificate is not for the host in BROKER".into(),
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => "TLS: the broker's certificate has expired".into(),
            Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
            ) => "TLS: the broker's certificate is not valid yet (check the clock)".into(),
            Error::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::HandshakeFailure,
            ) => format!(
                "TLS: client certificate rejected by the broker ({tls}); check CERT_FILE and KEY_FILE"
            ),
            other => format!("TLS: {other}"),
        }
    }
}

#[cfg(feature = "tls")]
pub use with_tls::{Client, client, connect, describe};

/// A build without the `tls` feature: `mqtts://` is a configuration error.
#[cfg(not(feature = "tls"))]
mod without_tls {
    use super::KeyError;

    /// Never made: there is no TLS in this build.
    #[derive(Debug, Clone)]
    pub enum Client {}

    pub fn client(_: &str, _: &str, _: &str, _: &str) -> Result<Client, KeyError> {
        Err((
            "BROKER",
            "this build has no TLS (cargo feature tls); use mqtt://".into(),
        ))
    }

    /// Never called (there is no `Client`); returns the plain stream's type
    /// so that the publisher's code is the same in both builds.
    pub async fn connect(
        client: &Client,
        _: tokio::net::TcpStream,
    ) -> std::io::Result<tokio::net::TcpStream> {
        match *client {}
    }

    pub fn describe(error: &std::io::Error) -> String {
        error.to_string()
    }
}

#[cfg(not(feature = "tls"))]
pub use without_tls::{Client, client, connect, describe};
