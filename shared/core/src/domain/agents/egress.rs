//! What an agent entry says about its way out: the hosts its runs may reach through the worker's
//! egress proxy (`network = "allow"`), and whether the proxy holds the vendor key for it
//! (`key_injection`). The proxy itself is `outpost_worker::egress`; what it guarantees is in
//! `docs/SECURITY.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One entry of an agent's `allow_hosts`: a host name (`github.com`) or every subdomain of one
/// (`*.githubusercontent.com`, which does not match the bare name), with an optional port
/// (`github.com:22`). Without a port, 443 and 80 are allowed. Names only: the proxy refuses raw
/// IP addresses whatever the list says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostRule {
    /// Lower case, no trailing dot; `*.` first for subdomains.
    pattern: String,
    port: Option<u16>,
}

/// The ports a rule without one allows.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

impl HostRule {
    /// Whether a connection to `host:port` (as the client named it) is allowed by this rule.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = normalize(host);
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        if !port_ok {
            return false;
        }
        match self.pattern.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1 && host.ends_with(suffix) && {
                    let cut = host.len() - suffix.len();
                    host.as_bytes().get(cut - 1) == Some(&b'.')
                }
            }
            None => host == self.pattern,
        }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// Lower case without a trailing dot: how names are compared.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl std::str::FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("allow_hosts entry {s:?}: {why}");
        let (name, port) = match s.rsplit_once(':') {
            Some((n, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be 1..=65535"))?;
                (n, Some(port))
            }
            None => (s, None),
        };
        let name = normalize(name);
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        if bare.is_empty() || bare.len() > 253 {
            return Err(bad("a host name is 1..=253 characters"));
        }
        if bare.parse::<std::net::IpAddr>().is_ok() || bare.starts_with('[') {
            return Err(bad("IP addresses are never allowed, name a host"));
        }
        let labels_ok = bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        });
        if !labels_ok {
            return Err(bad(
                "a host name is dot-separated labels of letters, digits, '-' and '_' (a leading '*.' for subdomains)",
            ));
        }
        if name.starts_with("*.") && !bare.contains('.') {
            return Err(bad("'*.' needs a domain with a dot (e.g. *.example.com)"));
        }
        Ok(Self { pattern: name, port })
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.pattern),
            None => f.write_str(&self.pattern),
        }
    }
}

impl Serialize for HostRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How the worker's proxy holds an agent's vendor key: the agent gets a per-run placeholder as
/// its key and the proxy's address as its base URL; the proxy checks the placeholder in `header`
/// and forwards the request to `upstream` over TLS with the tenant's real key in its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyInjection {
    /// The vendor's API base URL (`https://api.anthropic.com`); the agent entry's `base_url`,
    /// when set, is used instead. Its path is kept: the agent's base URL is the proxy's origin
    /// with this path.
    pub upstream: String,
    /// The request header the CLI sends its key in (`x-api-key`, `authorization`).
    pub header: String,
    /// What comes before the key in that header (`Bearer ` for `authorization`).
    #[serde(default)]
    pub prefix: String,
}

impl KeyInjection {
    pub fn new(upstream: &str, header: &str, prefix: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            header: header.to_ascii_lowercase(),
            prefix: prefix.to_owned(),
        }
    }

    /// `Authorization: Bearer <key>`.
    pub fn bearer(upstream: &str) -> Self {
        Self::new(upstream, "authorization", "Bearer ")
    }

    /// Checks the header name (an HTTP token) and the upstream URL.
    pub fn check(&self) -> Result<(), String> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if self.header.is_empty() || !self.header.bytes().all(token) {
            return Err(format!("key_injection header {:?} is not a header name", self.header));
        }
        if self.prefix.contains(['\r', '\n']) {
            return Err("key_injection prefix must be one line".to_owned());
        }
        super::check_base_url(&self.upstream).map_err(|e| format!("key_injection upstream: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> HostRule {
        s.parse().expect("a valid rule")
    }

    #[test]
    fn rules_match_names_subdomains_and_ports() {
        let gh = rule("GitHub.com.");
        assert_eq!(gh.to_string(), "github.com");
        assert!(gh.matches("github.com", 443) && gh.matches("GITHUB.COM.", 80));
        assert!(!gh.matches("github.com", 22) && !gh.matches("api.github.com", 443));
        assert!(!gh.matches("evilgithub.com", 443));
        let sub = rule("*.githubusercontent.com");
        assert!(sub.matches("raw.githubusercontent.com", 443));
        assert!(
            !sub.matches("githubusercontent.com", 443),
            "the bare name is not a subdomain"
        );
        assert!(!sub.matches("rawgithubusercontent.com", 443));
        let ssh = rule("github.com:22");
        assert!(ssh.matches("github.com", 22) && !ssh.matches("github.com", 443));
        assert_eq!(ssh.to_string(), "github.com:22");
    }

    #[test]
    fn addresses_and_malformed_names_are_refused() {
        for bad in [
            "1.2.3.4",
            "[::1]:443",
            "::1",
            "",
            "*.com",
            "a..b",
            "-x.com",
            "x.com:0",
            "x.com:99999",
            "a b.com",
        ] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad:?} should be refused");
        }
        let back: Vec<HostRule> = serde_json::from_str(r#"["a.example", "*.b.example:8443"]"#).expect("parse");
        assert_eq!(
            serde_json::to_string(&back).expect("json"),
            r#"["a.example","*.b.example:8443"]"#
        );
    }

    #[test]
    fn injections_check_their_header_and_upstream() {
        assert!(KeyInjection::bearer("https://api.x.ai/v1").check().is_ok());
        assert!(KeyInjection::new("https://a.example", "x api key", "").check().is_err());
        assert!(KeyInjection::new("ftp://a.example", "x-api-key", "").check().is_err());
        assert!(KeyInjection::new("https://u:p@a.example", "x-api-key", "")
            .check()
            .is_err());
    }
}
