//! The `Origin` check against cross-site WebSocket hijacking: browsers apply no CORS to
//! WebSockets, so any page on any site can open one to your server with its visitor's cookies.
//! By default a handshake whose `Origin` does not match its `Host` is refused.

use std::fmt;

/// Which web pages may open a WebSocket, by their `Origin`: set with
/// [`Settings::allowed_origins`](crate::Settings::allowed_origins) or
/// [`Settings::allow_any_origin`](crate::Settings::allow_any_origin).
///
/// A request without `Origin` (a non-browser client) always passes; browsers always send it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Origins {
    /// The page must come from the host the request is addressed to (its `Host`), whatever the
    /// scheme, on the same port. The default.
    #[default]
    SameHost,
    /// The page's origin must match one of these patterns (or the request's host).
    List(Vec<OriginPattern>),
    /// Any page, on any site (for public APIs that authenticate otherwise).
    Any,
}

/// An allowed origin: `example.com`, `https://app.example.com:8443`, or `*.example.com` for
/// every subdomain (not `example.com` itself). A scheme, when given, must match (`ws` counts as
/// `http`, `wss` as `https`); a port, when given, must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: Option<String>,
    host: String,
    subdomains: bool,
    port: Option<u16>,
}

impl OriginPattern {
    /// Reads a pattern. Anything after the authority (a path) is ignored.
    pub fn new(pattern: &str) -> Self {
        let (scheme, rest) = match pattern.split_once("://") {
            Some((scheme, rest)) => (Some(normal_scheme(scheme)), rest),
            None => (None, pattern),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = split_port(authority);
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(parent) => (parent, true),
            None => (host, false),
        };
        Self {
            scheme,
            host: host.to_ascii_lowercase(),
            subdomains,
            port,
        }
    }

    fn matches(&self, origin: &Origin) -> bool {
        if self
            .scheme
            .as_ref()
            .is_some_and(|scheme| *scheme != origin.scheme)
        {
            return false;
        }
        if self.port.is_some_and(|port| port != origin.port) {
            return false;
        }
        if self.subdomains {
            origin
                .host
                .strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            origin.host == self.host
        }
    }
}

impl From<&str> for OriginPattern {
    fn from(pattern: &str) -> Self {
        Self::new(pattern)
    }
}

impl From<String> for OriginPattern {
    fn from(pattern: String) -> Self {
        Self::new(&pattern)
    }
}

/// A parsed `Origin` header: `scheme://host[:port]`.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    /// The port given, or the scheme's default.
    port: u16,
}

impl Origin {
    fn parse(value: &str) -> Option<Self> {
        let (scheme, authority) = value.split_once("://")?;
        let scheme = normal_scheme(scheme);
        let (host, port) = split_port(authority);
        let port = match port {
            Some(port) => port,
            None => default_port(&scheme)?,
        };
        (!host.is_empty()).then(|| Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

fn normal_scheme(scheme: &str) -> String {
    match scheme.to_ascii_lowercase().as_str() {
        "ws" => "http".to_owned(),
        "wss" => "https".to_owned(),
        other => other.to_owned(),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host:port` (or `[v6]:port`) into the host and the port, if any.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal keeps its brackets, as the `Host` header writes it.
        if let Some((address, after)) = rest.split_once(']') {
            let host = &authority[..address.len() + 2];
            let port = after.strip_prefix(':').and_then(|port| port.parse().ok());
            return (host, port);
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port))
            if port.bytes().all(|byte| byte.is_ascii_digit()) && !port.is_empty() =>
        {
            (host, port.parse().ok())
        }
        _ => (authority, None),
    }
}

/// Whether a handshake with `origin` (the `Origin` header) addressed to `host` (the `Host`
/// header or the URI's authority) may proceed; otherwise, why not.
pub(crate) fn check(
    origin: Option<&str>,
    host: Option<&str>,
    allowed: &Origins,
) -> Result<(), String> {
    let Some(origin_value) = origin else {
        return Ok(());
    };
    if matches!(allowed, Origins::Any) {
        return Ok(());
    }
    let refused = || {
        Err(format!(
            "Cross-origin WebSocket request refused: pages from `{origin_value}` may not connect \
             to this endpoint"
        ))
    };
    let Some(origin) = Origin::parse(origin_value.trim()) else {
        return refused();
    };
    if let Some(host) = host {
        let (name, port) = split_port(host.trim());
        // The request's scheme is unknown here; a `Host` without a port uses the origin's
        // default one.
        let port = port.or_else(|| default_port(&origin.scheme));
        if name.eq_ignore_ascii_case(&origin.host) && port == Some(origin.port) {
            return Ok(());
        }
    }
    match allowed {
        Origins::List(patterns) if patterns.iter().any(|pattern| pattern.matches(&origin)) => {
            Ok(())
        }
        _ => refused(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_host(origin: &str, host: &str) -> bool {
        check(Some(origin), Some(host), &Origins::SameHost).is_ok()
    }

    #[test]
    fn the_same_host_passes_whatever_the_scheme_on_the_same_port() {
        assert!(same_host("http://example.com", "example.com"));
        assert!(same_host("https://EXAMPLE.com", "example.com"));
        assert!(same_host("http://localhost:8000", "localhost:8000"));
        assert!(same_host("https://example.com:443", "example.com"));
        assert!(same_host("http://[::1]:8000", "[::1]:8000"));
        assert!(!same_host("http://localhost:9000", "localhost:8000"));
        assert!(!same_host("https://evil.com", "example.com"));
        assert!(!same_host("https://example.com.evil.com", "example.com"));
        assert!(!same_host("null", "example.com"));
        assert!(!same_host("", "example.com"));
    }

    #[test]
    fn no_origin_passes_and_any_means_any() {
        assert!(check(None, Some("example.com"), &Origins::SameHost).is_ok());
        assert!(check(Some("https://evil.com"), Some("example.com"), &Origins::Any).is_ok());
    }

    #[test]
    fn listed_origins_match_exactly_or_by_subdomain() {
        let allowed = Origins::List(
            ["app.example.com", "*.trusted.org", "https://secure.io:8443"]
                .into_iter()
                .map(OriginPattern::new)
                .collect(),
        );
        let ok = |origin: &str| check(Some(origin), Some("api.internal"), &allowed).is_ok();
        assert!(ok("https://app.example.com"));
        assert!(ok("http://app.example.com:3000"));
        assert!(!ok("https://www.example.com"));
        assert!(ok("https://a.trusted.org"));
        assert!(ok("https://a.b.trusted.org"));
        assert!(!ok("https://trusted.org"));
        assert!(!ok("https://eviltrusted.org"));
        assert!(ok("wss://secure.io:8443"));
        assert!(!ok("http://secure.io:8443"));
        assert!(!ok("https://secure.io"));
        // The request's own host still passes.
        assert!(ok("https://api.internal"));
    }
}
