//! The one place Herald makes outbound HTTP requests: a callback attempt.

use super::egress::{DnsFailed, EgressPolicy, GuardedResolver, PrivateAddressRefused};
use crate::domain::webhook::standard_body;
use crate::domain::{
    AttemptOutcome, CallbackFormat, CallbackUrl, DeliveryId, EventType, Millis, SigningKeys,
};
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much of a response body the delivery log keeps.
pub const EXCERPT_BYTES: usize = 4096;

/// What a callback carries.
#[derive(Debug, Clone)]
pub struct Callback<'a> {
    pub id: &'a DeliveryId,
    pub url: &'a CallbackUrl,
    pub event_type: EventType,
    pub instance_id: &'a str,
    pub process_name: &'a str,
    /// Marks a test callback (`webhook-test: true`).
    pub test: bool,
    pub format: CallbackFormat,
    /// When the event happened (the standard body's `timestamp`).
    pub occurred_at: Millis,
    /// The instance snapshot (JSON) for the standard body; `None` for `deleted`.
    pub instance: Option<&'a str>,
    /// The secrets that sign the callback.
    pub keys: &'a SigningKeys,
}

/// The result of one attempt, before it is stored.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started_at: Millis,
    pub duration: Duration,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// `Retry-After` of a 429 or 503 answer.
    pub retry_after: Option<Duration>,
}

/// An HTTP client for callbacks: no redirects, no proxies, a whole-attempt timeout, and the
/// egress policy enforced on resolved addresses.
#[derive(Clone)]
pub struct CallbackClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
    timeout: Duration,
}

impl CallbackClient {
    /// A client whose keep-alive pool keeps up to `per_host` idle connections to each host: as
    /// many as a host's adaptive limit may reach (`--max-per-host`), so a receiver served at its
    /// limit reuses every connection instead of opening new ones past a smaller pool.
    pub fn new(policy: EgressPolicy, timeout: Duration, per_host: usize) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(per_host)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::clone(&policy),
            }))
            .build()?;
        Ok(Self {
            http,
            policy,
            timeout,
        })
    }

    /// The configured whole-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Makes one attempt. Never fails: every problem becomes an outcome with a message.
    pub async fn send(&self, cb: &Callback<'_>) -> Attempt {
        let started_at = Millis::now();
        let clock = Instant::now();
        let result = self.try_send(cb, started_at).await;
        let duration = clock.elapsed();
        match result {
            Ok((status, excerpt, retry_after)) => {
                let code = status.as_u16();
                let (outcome, error) = AttemptOutcome::of_status(code);
                Attempt {
                    started_at,
                    duration,
                    outcome,
                    status_code: Some(code),
                    error,
                    response_excerpt: excerpt,
                    retry_after,
                }
            }
            Err((outcome, mut message)) => {
                if outcome == AttemptOutcome::Timeout {
                    message = format!("timed out after {} ms", self.timeout.as_millis());
                }
                Attempt {
                    started_at,
                    duration,
                    outcome,
                    status_code: None,
                    error: Some(message),
                    response_excerpt: None,
                    retry_after: None,
                }
            }
        }
    }

    async fn try_send(
        &self,
        cb: &Callback<'_>,
        started_at: Millis,
    ) -> Result<(reqwest::StatusCode, Option<String>, Option<Duration>), (AttemptOutcome, String)>
    {
        let configured = cb.url.parsed();
        // Literal IP hosts never go through the resolver, so they are checked here.
        let literal = match configured.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.policy.allows(*ip)) {
            let host = configured.host_str().unwrap_or_default().to_owned();
            return Err((
                AttemptOutcome::PrivateAddress,
                PrivateAddressRefused { host, addr: ip }.to_string(),
            ));
        }
        // The signed payload is exactly what travels: the query string of a Kianda GET (without
        // the `?`), or the JSON body of a standard POST.
        let timestamp = started_at.unix_seconds();
        let mut request = match cb.format {
            CallbackFormat::Kianda => {
                let url = cb
                    .url
                    .kianda_request(cb.instance_id, cb.process_name, cb.event_type);
                let signature = cb.keys.header(
                    cb.id.as_str(),
                    timestamp,
                    url.query().unwrap_or_default().as_bytes(),
                );
                self.http.get(url).header("webhook-signature", signature)
            }
            CallbackFormat::Standard => {
                let mut url = configured.clone();
                url.set_fragment(None);
                let _ = url.set_username("");
                let _ = url.set_password(None);
                let instance = cb.instance.and_then(|text| serde_json::from_str(text).ok());
                let body = standard_body(
                    cb.event_type,
                    cb.occurred_at,
                    cb.instance_id,
                    cb.process_name,
                    instance,
                );
                let signature = cb.keys.header(cb.id.as_str(), timestamp, &body);
                self.http
                    .post(url)
                    .header("webhook-signature", signature)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
            }
        }
        .header("webhook-id", cb.id.as_str())
        .header("webhook-timestamp", timestamp.to_string());
        if cb.test {
            request = request.header("webhook-test", "true");
        }
        if !configured.username().is_empty() {
            let user = percent_decode(configured.username());
            let password = configured.password().map(percent_decode);
            request = request.basic_auth(user, password);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let retry_after = match status.as_u16() {
            429 | 503 => response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, started_at)),
            _ => None,
        };
        let mut body: Vec<u8> = Vec::new();
        while body.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status already decided the outcome; a body cut short only loses the excerpt.
                Err(_) => break,
            }
        }
        body.truncate(EXCERPT_BYTES);
        let excerpt = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
        Ok((status, excerpt, retry_after))
    }
}

/// Parses `Retry-After`: delay seconds, or an HTTP date (judged against `now`).
pub fn parse_retry_after(value: &str, now: Millis) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some(Duration::from_millis(
        u64::try_from(at_ms - now.0).unwrap_or(0),
    ))
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Names what went wrong with a request that got no response, without echoing the URL (which
/// may hold credentials).
fn classify(error: reqwest::Error) -> (AttemptOutcome, String) {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<PrivateAddressRefused>() {
            return (AttemptOutcome::PrivateAddress, refused.to_string());
        }
        if let Some(dns) = cause.downcast_ref::<DnsFailed>() {
            return (AttemptOutcome::DnsFailure, dns.to_string());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return (
                AttemptOutcome::ConnectionRefused,
                "connection refused".to_owned(),
            );
        }
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return (AttemptOutcome::TlsError, format!("TLS error: {tls}"));
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return (AttemptOutcome::Timeout, "timed out".to_owned());
    }
    let detail = error.without_url().to_string();
    (AttemptOutcome::ConnectionError, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = Millis(784_111_777_000); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
