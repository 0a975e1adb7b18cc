//! Credentials, resolved once from [`Auth`]: a `.creds` file read and
//! parsed, an nkey seed turned into its key pair. Both connections use the
//! result: [`Credentials::client_options`] for the `async-nats` client,
//! [`Credentials::connect_fields`] for the `CONNECT` line of the exporter's
//! wire connection.

use std::sync::Arc;

use base64::Engine as _;

use crate::config::Auth;
use crate::error::ConnectCause;

/// A credential ready to present: nothing left to read or parse.
#[derive(Clone)]
pub(crate) enum Credentials {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// An nkey: the server checks the signature of its nonce.
    NKey {
        seed: String,
        key: Arc<nkeys::KeyPair>,
    },
    /// A `.creds` file's user JWT and the key pair of its seed.
    Jwt {
        jwt: String,
        key: Arc<nkeys::KeyPair>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::UserPassword { .. } => "UserPassword(..)",
            Credentials::Token(_) => "Token(..)",
            Credentials::NKey { .. } => "NKey(..)",
            Credentials::Jwt { .. } => "Jwt(..)",
        })
    }
}

fn key_pair(seed: &str) -> Result<Arc<nkeys::KeyPair>, (ConnectCause, String)> {
    nkeys::KeyPair::from_seed(seed.trim())
        .map(Arc::new)
        .map_err(|e| {
            (
                ConnectCause::Authentication,
                format!("the nkey seed is not valid: {e}"),
            )
        })
}

impl Credentials {
    /// Reads and checks what `auth` names; a file that cannot be read or a
    /// seed that is not one is an authentication failure naming it.
    pub(crate) fn resolve(auth: &Auth) -> Result<Self, (ConnectCause, String)> {
        Ok(match auth {
            Auth::None => Credentials::None,
            Auth::UserPassword { user, password } => Credentials::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            Auth::Token(t) => Credentials::Token(t.clone()),
            Auth::NKey(seed) => Credentials::NKey {
                seed: seed.trim().to_string(),
                key: key_pair(seed)?,
            },
            Auth::CredentialsFile(path) => {
                let named = |e: String| {
                    (
                        ConnectCause::Authentication,
                        format!("credentials file {}: {e}", path.display()),
                    )
                };
                let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
                let (jwt, seed) = parse_creds(&text).map_err(|e| named(e.to_string()))?;
                Credentials::Jwt {
                    jwt,
                    key: key_pair(&seed)?,
                }
            }
        })
    }

    /// `async-nats` options presenting these credentials.
    pub(crate) fn client_options(&self) -> async_nats::ConnectOptions {
        match self {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            Credentials::NKey { seed, .. } => async_nats::ConnectOptions::with_nkey(seed.clone()),
            Credentials::Jwt { jwt, key } => {
                let key = key.clone();
                async_nats::ConnectOptions::with_jwt(jwt.clone(), move |nonce| {
                    let key = key.clone();
                    async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
        }
    }

    /// Puts the credentials into the `CONNECT` options `o`, signing the
    /// server's `nonce` where a key is used. `url_user`: the user and
    /// password of a `nats://user:pass@host` address, used without other
    /// credentials.
    pub(crate) fn connect_fields(
        &self,
        o: &mut serde_json::Value,
        url_user: Option<&(String, String)>,
        nonce: Option<&str>,
    ) -> Result<(), (ConnectCause, String)> {
        let sign = |key: &nkeys::KeyPair| -> Result<String, (ConnectCause, String)> {
            let nonce = nonce.ok_or((
                ConnectCause::Authentication,
                "the server sent no nonce to sign".to_string(),
            ))?;
            let sig = key.sign(nonce.as_bytes()).map_err(|e| {
                (
                    ConnectCause::Authentication,
                    format!("signing the nonce: {e}"),
                )
            })?;
            Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
        };
        match self {
            Credentials::None => {
                if let Some((user, pass)) = url_user {
                    o["user"] = user.clone().into();
                    o["pass"] = pass.clone().into();
                }
            }
            Credentials::UserPassword { user, password } => {
                o["user"] = user.clone().into();
                o["pass"] = password.clone().into();
            }
            Credentials::Token(t) => o["auth_token"] = t.clone().into(),
            Credentials::NKey { key, .. } => {
                o["nkey"] = key.public_key().into();
                o["sig"] = sign(key)?.into();
            }
            Credentials::Jwt { jwt, key } => {
                o["jwt"] = jwt.clone().into();
                o["sig"] = sign(key)?.into();
            }
        }
        Ok(())
    }
}

/// The user JWT and the nkey seed of a `.creds` file: the first line after
/// each `-----BEGIN …-----` marker.
pub(crate) fn parse_creds(text: &str) -> Result<(String, String), &'static str> {
    let block = |what: &str| -> Option<String> {
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.starts_with("-----BEGIN") && l.contains(what))?;
        lines
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with("---"))
            .map(str::to_string)
    };
    let jwt = block("JWT").ok_or("no user JWT block")?;
    let seed = block("SEED").ok_or("no nkey seed block")?;
    Ok((jwt, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_files_parse() {
        let text = "-----BEGIN NATS USER JWT-----\neyJ0.abc.def\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\n\n-----BEGIN USER NKEY SEED-----\nSUAKEY\n------END USER NKEY SEED------\n";
        assert_eq!(
            parse_creds(text).unwrap(),
            ("eyJ0.abc.def".to_string(), "SUAKEY".to_string())
        );
        assert!(parse_creds("nothing").is_err());
    }
}
