//! Outgoing webhooks: an alert is POSTed as JSON to its rule's URL, signed with the
//! rule's secret (HMAC-SHA256 over `<timestamp>.<body>`, in `Arbiter-Signature:
//! t=<unix seconds>,v1=<hex>`), so the receiver can check it came from here and is fresh.
//!
//! A webhook URL is a tenant admin's input, so the admin could be made to reach its own
//! network (SSRF). By default a URL must be `https://`, its host must not be an address
//! in a loopback, private, link-local, shared or otherwise special range, and a name must
//! resolve only to public addresses (checked at connect time, so DNS rebinding cannot
//! slip one in); redirects are not followed. `--webhook-allow-private-networks` lifts
//! these checks for development and tests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use sha2::Sha256;

use crate::problem::{ApiResult, Problem};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "arbiter-signature";

/// The client webhooks are sent with, and what it may reach.
#[derive(Debug, Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    pub allow_private: bool,
}

impl Webhooks {
    pub fn new(allow_private: bool) -> anyhow::Result<Webhooks> {
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("arbiter-admin/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly)).https_only(true);
        }
        Ok(Webhooks { client: builder.build()?, allow_private })
    }

    /// Checks a URL a caller gives (`field` is blamed): absolute, `https://` (unless
    /// private networks are allowed), no credentials, and no special address as host.
    pub fn check_url(&self, field: &str, url: &str) -> ApiResult<Url> {
        let bad = |why: &str| Problem::invalid(field, format!("`{}` {why}", field.trim_start_matches('/')));
        if url.len() > 2000 {
            return Err(bad("is longer than 2000 characters"));
        }
        let parsed = Url::parse(url).map_err(|e| bad(&format!("is not a URL: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            _ => return Err(bad("must be an https:// URL")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("must not carry credentials; the request is signed instead"));
        }
        let host = parsed.host().ok_or_else(|| bad("has no host"))?;
        if !self.allow_private {
            let ip = match host {
                url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
                url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
                url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost") => {
                    return Err(bad("must not reach this host's own network"))
                }
                url::Host::Domain(_) => None,
            };
            if ip.is_some_and(|ip| !is_public(ip)) {
                return Err(bad("must not reach a loopback, private, link-local or reserved address"));
            }
        }
        Ok(parsed)
    }

    /// POSTs `body` to `url`, signed with `secret`. Ok when the receiver answered 2xx.
    pub async fn deliver(&self, url: &str, secret: &[u8], body: &[u8]) -> Result<(), String> {
        let url = self.check_url("webhook_url", url).map_err(|p| p.detail)?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(secret, timestamp, body);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, format!("t={timestamp},v1={signature}"))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("the webhook could not be sent: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    }
}

/// The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Is `ip` an address on the public internet (not loopback, private, link-local, shared
/// address space, documentation, benchmarking, multicast, unspecified or reserved)?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 (reaches IPv4 space)
        }
    }
}

/// A resolver that gives only public addresses (a name with none is an error).
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reached() {
        for private in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "64:ff9b::a00:1"] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn webhook_urls_are_checked() {
        let strict = Webhooks::new(false).unwrap();
        assert!(strict.check_url("/webhook_url", "https://hooks.example.com/arbiter").is_ok());
        for (url, why) in [
            ("http://hooks.example.com/", "https"),
            ("https://127.0.0.1/", "loopback"),
            ("https://[::1]/", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://localhost:8080/", "own network"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("not a url", "not a URL"),
            ("ftp://hooks.example.com/", "https"),
        ] {
            let err = strict.check_url("/webhook_url", url).unwrap_err();
            assert!(err.detail.contains(why), "{url}: {}", err.detail);
            assert_eq!(err.field.as_deref(), Some("/webhook_url"));
        }
        let open = Webhooks::new(true).unwrap();
        assert!(open.check_url("/webhook_url", "http://127.0.0.1:9000/hook").is_ok());
    }

    #[test]
    fn a_signature_covers_the_time_and_the_body() {
        let s = sign(b"secret", 1_700_000_000, b"{}");
        assert_eq!(s.len(), 64);
        assert_ne!(s, sign(b"secret", 1_700_000_001, b"{}"));
        assert_ne!(s, sign(b"secret", 1_700_000_000, b"{ }"));
        assert_ne!(s, sign(b"other", 1_700_000_000, b"{}"));
    }
}
