//! The server's `INFO`: what it says about itself.

/// The parts of the server's `INFO` used here: sent when the connection
/// opens, and again whenever the server's settings change.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Info {
    #[serde(default)]
    pub(crate) max_payload: usize,
    #[serde(default)]
    pub(super) tls_required: bool,
    #[serde(default)]
    pub(super) tls_available: bool,
    #[serde(default)]
    pub(super) nonce: Option<String>,
    #[serde(default)]
    pub(super) headers: bool,
}
