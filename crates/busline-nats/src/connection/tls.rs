//! TLS, resolved once from [`Tls`]: the CA and the client certificate are
//! read and the `rustls` configuration built when the connection settings
//! are made. The `async-nats` client gets it
//! ([`TlsSettings::client_options`]), and the exporter's wire connection
//! connects with it ([`TlsSettings::connector`]).

use std::sync::Arc;

use crate::config::Tls;
use crate::error::ConnectCause;

/// TLS as both connections use it.
#[derive(Clone)]
pub(crate) struct TlsSettings {
    /// The configuration asks for TLS (required, a CA or a client
    /// certificate): a server without it is refused.
    pub(crate) required: bool,
    /// Built from the configured CA (else the system's roots) and client
    /// certificate, when TLS is required.
    config: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

pub(crate) fn tls_error(e: impl std::fmt::Display) -> (ConnectCause, String) {
    (ConnectCause::Tls, e.to_string())
}

impl TlsSettings {
    /// Reads the files `tls` names and builds the client configuration, if
    /// TLS is asked for.
    pub(crate) fn resolve(tls: &Tls) -> Result<Self, (ConnectCause, String)> {
        let required = tls.required || tls.ca_file.is_some() || tls.client_cert.is_some();
        let config = if required {
            Some(Arc::new(client_config(tls)?))
        } else {
            None
        };
        Ok(TlsSettings { required, config })
    }

    /// `o` with TLS required and this configuration, when TLS is asked for.
    pub(crate) fn client_options(
        &self,
        o: async_nats::ConnectOptions,
    ) -> async_nats::ConnectOptions {
        match &self.config {
            Some(c) => o.tls_client_config((**c).clone()).require_tls(true),
            None => o,
        }
    }

    /// The connector for a TLS connection: with the resolved configuration,
    /// or (a server that demands TLS, or a `tls://` address, without TLS
    /// configured here) with the system's roots.
    pub(crate) fn connector(&self) -> Result<tokio_rustls::TlsConnector, (ConnectCause, String)> {
        let config = match &self.config {
            Some(c) => c.clone(),
            None => Arc::new(client_config(&Tls::default())?),
        };
        Ok(tokio_rustls::TlsConnector::from(config))
    }
}

/// The trusted roots: the CA file's certificates, else the system's.
fn roots(tls: &Tls) -> Result<rustls::RootCertStore, (ConnectCause, String)> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            let bad =
                |e: &dyn std::fmt::Display| tls_error(format!("tls ca file {}: {e}", ca.display()));
            let pem = std::fs::read(ca).map_err(|e| bad(&e))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| bad(&e))?;
                roots.add(cert).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(tls_error(format!(
                    "tls ca file {} holds no certificate",
                    ca.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs()
                .map_err(|e| tls_error(format!("the system's root certificates: {e}")))?;
            for cert in found {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, (ConnectCause, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots(tls)?);
    Ok(match &tls.client_cert {
        Some((cert, key)) => {
            let certs = std::fs::read(cert)
                .map_err(|e| tls_error(format!("client certificate {}: {e}", cert.display())))?;
            let certs = rustls_pemfile::certs(&mut certs.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(format!("client certificate {}: {e}", cert.display())))?;
            let k = std::fs::read(key)
                .map_err(|e| tls_error(format!("client key {}: {e}", key.display())))?;
            let k = rustls_pemfile::private_key(&mut k.as_slice())
                .map_err(|e| tls_error(format!("client key {}: {e}", key.display())))?
                .ok_or_else(|| tls_error(format!("client key {}: no key in it", key.display())))?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| tls_error(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    })
}
