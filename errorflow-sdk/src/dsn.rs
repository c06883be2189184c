//! Parsing of `http(s)://KEY@HOST[:PORT]/PROJECT_ID` DSNs.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Where to send events and with which key.
///
/// `Debug` and `Display` hide the key, so that a DSN can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    scheme: String,
    key: String,
    host: String,
    port: Option<u16>,
    project_id: String,
}

impl Dsn {
    /// The project key sent in `X-Errorflow-Key`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The project id (the DSN's path).
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// `scheme://host[:port]`, the collector's base URL.
    pub fn base_url(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{}", self.scheme, self.host, port),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// The ingest endpoint, `{base}/api/v1/events`.
    pub fn events_url(&self) -> String {
        format!("{}/api/v1/events", self.base_url())
    }
}

impl FromStr for Dsn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Dsn, Error> {
        let invalid = |reason| Error::InvalidDsn {
            dsn: redact(s),
            reason,
        };
        let s = s.trim();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| invalid("missing scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(invalid("scheme must be http or https"));
        }
        let (key, rest) = rest
            .split_once('@')
            .ok_or_else(|| invalid("missing KEY@ before the host"))?;
        if key.is_empty() {
            return Err(invalid("empty key"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let project_id = path.trim_matches('/').to_string();
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal such as `[::1]` has colons of its own; only a
            // colon after the closing bracket introduces a port.
            Some((host, port)) if !port.contains(']') => {
                let port = port.parse().map_err(|_| invalid("port is not a number"))?;
                (host, Some(port))
            }
            _ => (authority, None),
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        Ok(Dsn {
            scheme: scheme.to_string(),
            key: key.to_string(),
            host: host.to_string(),
            port,
            project_id,
        })
    }
}

/// Replaces the key of a (possibly malformed) DSN so that it can be printed.
fn redact(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(i), Some(j)) if j > i => format!("{}***{}", &s[..i + 3], &s[j..]),
        _ => s.to_string(),
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.base_url();
        let (scheme, host) = base.split_once("://").unwrap_or(("", &base));
        write!(f, "{scheme}://***@{host}/{}", self.project_id)
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_dsn() {
        let dsn: Dsn = "http://abc@127.0.0.1:8000/1".parse().unwrap();
        assert_eq!(dsn.key(), "abc");
        assert_eq!(dsn.project_id(), "1");
        assert_eq!(dsn.base_url(), "http://127.0.0.1:8000");
        assert_eq!(dsn.events_url(), "http://127.0.0.1:8000/api/v1/events");
    }

    #[test]
    fn parses_https_without_port() {
        let dsn: Dsn = "https://k@errors.example.com/42".parse().unwrap();
        assert_eq!(dsn.base_url(), "https://errors.example.com");
    }

    #[test]
    fn debug_hides_the_key() {
        let dsn: Dsn = "http://secretkey@h:1/2".parse().unwrap();
        assert!(!format!("{dsn:?}").contains("secretkey"));
        let err = "ftp://secretkey@h/1".parse::<Dsn>().unwrap_err();
        assert!(!err.to_string().contains("secretkey"), "{err}");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "h:1/2",
            "http://h:1/2",
            "http://@h/1",
            "http://k@h:x/1",
            "http://k@/1",
        ] {
            assert!(bad.parse::<Dsn>().is_err(), "{bad}");
        }
    }
}
