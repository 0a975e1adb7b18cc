//! The server addresses of the wire connection.

/// One server of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addr {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `tls://`: TLS whatever the server says.
    pub(crate) tls: bool,
    /// `nats://user:pass@host`.
    pub(crate) user: Option<(String, String)>,
}

/// Parses `nats://host:port`, `tls://host:port`, `host:port`, `host`, and
/// lists of them separated by commas.
pub(crate) fn parse_servers(s: &str) -> Result<Vec<Addr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tls, rest) = if let Some(r) = part.strip_prefix("tls://") {
            (true, r)
        } else if let Some(r) = part.strip_prefix("nats://") {
            (false, r)
        } else if part.contains("://") {
            return Err(format!("`{part}`: the scheme must be nats:// or tls://"));
        } else {
            (false, part)
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => {
                let (name, pass) = u.split_once(':').unwrap_or((u, ""));
                (Some((name.to_string(), pass.to_string())), h)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // `[::1]:4222`, `host:4222`; a bare IPv6 address has more colons.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("`{part}`: `{p}` is not a port"))?;
                (h, port)
            }
            _ => (hostport, 4222),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{part}`: no host"));
        }
        out.push(Addr {
            host: host.to_string(),
            port,
            tls,
            user,
        });
    }
    if out.is_empty() {
        return Err("no server given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_parse() {
        let a = parse_servers("nats://127.0.0.1:4223, tls://u:p@example.com, host").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[0].host.as_str(), a[0].port, a[0].tls),
            ("127.0.0.1", 4223, false)
        );
        assert_eq!(
            (a[1].host.as_str(), a[1].port, a[1].tls),
            ("example.com", 4222, true)
        );
        assert_eq!(a[1].user, Some(("u".into(), "p".into())));
        assert_eq!((a[2].host.as_str(), a[2].port), ("host", 4222));
        let v6 = parse_servers("nats://[::1]:5000").unwrap();
        assert_eq!((v6[0].host.as_str(), v6[0].port), ("::1", 5000));
        assert!(parse_servers("http://x").unwrap_err().contains("scheme"));
        assert!(parse_servers("nats://x:port")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_servers(" , ").is_err());
    }
}
