//! Callback settings and the shape of a Kianda callback request.

use super::Invalid;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The three instance events of the original product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Created,
    Updated,
    Deleted,
}

impl EventType {
    /// Every event, in the order the settings dialog shows them.
    pub const ALL: [EventType; 3] = [EventType::Created, EventType::Updated, EventType::Deleted];

    /// The value of the `eventType` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "created",
            EventType::Updated => "updated",
            EventType::Deleted => "deleted",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "created" => Ok(EventType::Created),
            "updated" => Ok(EventType::Updated),
            "deleted" => Ok(EventType::Deleted),
            other => Err(Invalid::new(format!(
                "`{other}` is not an event type; use created, updated or deleted"
            ))),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How callbacks are sent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CallbackFormat {
    /// The original product's: `GET` with `instanceID`, `processName` and `eventType` in the
    /// query; the signature covers the query string.
    #[default]
    Kianda,
    /// Standard Webhooks: `POST` with a JSON body; the signature covers the body.
    Standard,
}

impl CallbackFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackFormat::Kianda => "kianda",
            CallbackFormat::Standard => "standard",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "kianda" => Ok(CallbackFormat::Kianda),
            "standard" => Ok(CallbackFormat::Standard),
            other => Err(Invalid::new(format!(
                "`{other}` is not a callback format; use kianda or standard"
            ))),
        }
    }
}

/// The JSON body of a Standard Webhooks callback. `instance` is the instance as the API showed
/// it when the event happened (`None` for `deleted`).
pub fn standard_body(
    event: EventType,
    occurred_at: super::Millis,
    instance_id: &str,
    process_name: &str,
    instance: Option<serde_json::Value>,
) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("instance.{}", event.as_str()),
        "timestamp": occurred_at.to_rfc3339(),
        "data": {
            "instanceID": instance_id,
            "processName": process_name,
            "eventType": event.as_str(),
            "instance": instance,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The longest callback URL Herald accepts.
pub const MAX_URL_LEN: usize = 2048;
/// The most URLs one event may have.
pub const MAX_URLS_PER_EVENT: usize = 20;

/// Most non-blank lines read for one event: room for duplicates and typos around
/// [`MAX_URLS_PER_EVENT`] URLs; a longer list is refused before any line is parsed, so a
/// pasted 60,000-line list costs nothing (issue 19, item 8).
pub const MAX_LINES_PER_EVENT: usize = 100;

/// Most problems reported one by one; the rest are only counted.
pub const MAX_PROBLEMS_SHOWN: usize = 100;

/// An absolute `http`/`https` URL with a host, at most [`MAX_URL_LEN`] characters.
///
/// The text is kept as the person typed it (trimmed), so the settings read back exactly;
/// [`CallbackUrl::redacted`] is the form for logs and listings, without credentials.
#[derive(Clone)]
pub struct CallbackUrl {
    text: String,
    /// The parsed form, kept so that a callback attempt never parses its URL again.
    parsed: url::Url,
}

impl PartialEq for CallbackUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CallbackUrl {}

impl std::hash::Hash for CallbackUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl CallbackUrl {
    /// Parses one URL, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Invalid::new("the URL is empty"));
        }
        if text.chars().count() > MAX_URL_LEN {
            return Err(Invalid::new(format!(
                "the URL is longer than {MAX_URL_LEN} characters"
            )));
        }
        super::text::single_line("the URL", text)?;
        let parsed = url::Url::parse(text).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => Invalid::new(
                "the URL is relative; write an absolute URL such as https://example.com/hook",
            ),
            url::ParseError::EmptyHost => Invalid::new("the URL has no host"),
            other => Invalid::new(format!("the URL is not valid ({other})")),
        })?;
        match parsed.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Invalid::new(format!(
                    "the scheme `{other}` is not allowed; use http or https"
                )));
            }
        }
        match parsed.host_str() {
            None | Some("") => return Err(Invalid::new("the URL has no host")),
            Some(_) => {}
        }
        if text.chars().any(char::is_whitespace) {
            // The URL parser would quietly encode it; the stored text must be the URL itself.
            return Err(Invalid::new("the URL contains a space; write it as %20"));
        }
        Ok(Self {
            text: text.to_owned(),
            parsed,
        })
    }

    /// The URL as configured (it may hold credentials: never log this).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed form, made when the URL was checked.
    pub fn parsed(&self) -> &url::Url {
        &self.parsed
    }

    /// The parsed form, owned.
    pub fn to_url(&self) -> url::Url {
        self.parsed.clone()
    }

    /// The destination host as `host:port` (port defaulted by scheme): the unit of the per-host
    /// concurrency cap.
    pub fn host_key(&self) -> String {
        let url = self.to_url();
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        match url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The URL without user name, password or fragment: safe for logs and listings.
    pub fn redacted(&self) -> String {
        redact(&self.text)
    }

    /// The request URL of a Kianda callback: the configured URL with
    /// `instanceID=…&processName=…&eventType=…` appended (after `&` when it already has a query),
    /// values percent-encoded, any fragment dropped, credentials removed (they travel as Basic
    /// authentication instead).
    pub fn kianda_request(
        &self,
        instance_id: &str,
        process_name: &str,
        event: EventType,
    ) -> url::Url {
        let mut url = self.to_url();
        url.set_fragment(None);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let ours = kianda_query(instance_id, process_name, event);
        let query = match url.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{ours}"),
            _ => ours,
        };
        url.set_query(Some(&query));
        url
    }
}

/// `instanceID=…&processName=…&eventType=…`, percent-encoded.
pub fn kianda_query(instance_id: &str, process_name: &str, event: EventType) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("instanceID", instance_id)
        .append_pair("processName", process_name)
        .append_pair("eventType", event.as_str())
        .finish()
}

/// Removes credentials and fragment from a URL text for display; unparseable text is shown
/// only by its scheme-less host part.
pub fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}

impl fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallbackUrl")
            .field(&self.redacted())
            .finish()
    }
}

/// The callbacks of one event: the slider and its URLs (kept when the slider is off).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventSettings {
    pub enabled: bool,
    pub urls: Vec<CallbackUrl>,
}

/// A workspace's "Instance Callback URLs" settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookSettings {
    pub created: EventSettings,
    pub updated: EventSettings,
    pub deleted: EventSettings,
    pub format: CallbackFormat,
}

/// One bad URL in submitted settings: which event, which line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlProblem {
    pub event_type: EventType,
    /// 1-based position in the submitted list (the line in the dialog's text box); absent when the
    /// problem concerns the list as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub message: String,
}

/// What is wrong with submitted settings: the first [`MAX_PROBLEMS_SHOWN`] problems, and how
/// many there are in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlProblems {
    pub shown: Vec<UrlProblem>,
    pub total: usize,
}

impl UrlProblems {
    fn push(&mut self, problem: UrlProblem) {
        self.total += 1;
        if self.shown.len() < MAX_PROBLEMS_SHOWN {
            self.shown.push(problem);
        }
    }
}

impl WebhookSettings {
    /// Builds settings from raw submitted lists, collecting every problem at once.
    ///
    /// Blank entries are skipped (a trailing newline in a text box is no error), duplicates within
    /// one event are removed keeping the first, and more than [`MAX_URLS_PER_EVENT`] distinct URLs
    /// is a problem of its own.
    /// Every URL any event lists, as configured, each once.
    pub fn all_urls(&self) -> std::collections::BTreeSet<&str> {
        [&self.created, &self.updated, &self.deleted]
            .into_iter()
            .flat_map(|e| e.urls.iter().map(CallbackUrl::as_str))
            .collect()
    }

    pub fn parse(raw: [(bool, &[String]); 3]) -> Result<Self, UrlProblems> {
        Self::parse_with(raw, |_| Ok(()))
    }

    /// Like [`WebhookSettings::parse`], with one more rule applied to every URL (the operator's
    /// egress policy), whose failures are reported like the others.
    pub fn parse_with(
        raw: [(bool, &[String]); 3],
        check: impl Fn(&CallbackUrl) -> Result<(), Invalid>,
    ) -> Result<Self, UrlProblems> {
        let mut problems = UrlProblems {
            shown: Vec::new(),
            total: 0,
        };
        let mut events: Vec<EventSettings> = Vec::with_capacity(3);
        for (event, (enabled, urls)) in EventType::ALL.into_iter().zip(raw) {
            let lines = urls.iter().filter(|t| !t.trim().is_empty()).count();
            if lines > MAX_LINES_PER_EVENT {
                problems.push(UrlProblem {
                    event_type: event,
                    line: None,
                    url: None,
                    message: format!(
                        "{lines} lines given; at most {MAX_LINES_PER_EVENT} lines ({MAX_URLS_PER_EVENT} distinct URLs) are read per event"
                    ),
                });
                events.push(EventSettings::default());
                continue;
            }
            let mut parsed: Vec<CallbackUrl> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (index, text) in urls.iter().enumerate() {
                if text.trim().is_empty() {
                    continue;
                }
                match CallbackUrl::parse(text).and_then(|url| check(&url).map(|()| url)) {
                    Ok(url) => {
                        if seen.insert(url.clone()) {
                            parsed.push(url);
                        }
                    }
                    Err(why) => problems.push(UrlProblem {
                        event_type: event,
                        line: Some(index + 1),
                        url: Some(shorten(&redact_or_raw(text))),
                        message: why.0,
                    }),
                }
            }
            if parsed.len() > MAX_URLS_PER_EVENT {
                problems.push(UrlProblem {
                    event_type: event,
                    line: Some(MAX_URLS_PER_EVENT + 1),
                    url: None,
                    message: format!(
                        "{} distinct URLs given; at most {MAX_URLS_PER_EVENT} are allowed per event",
                        parsed.len()
                    ),
                });
            }
            events.push(EventSettings {
                enabled,
                urls: parsed,
            });
        }
        if problems.total > 0 {
            return Err(problems);
        }
        let mut it = events.into_iter();
        Ok(Self {
            created: it.next().unwrap_or_default(),
            updated: it.next().unwrap_or_default(),
            deleted: it.next().unwrap_or_default(),
            format: CallbackFormat::default(),
        })
    }

    /// The settings of one event, to change.
    pub fn event_mut(&mut self, event: EventType) -> &mut EventSettings {
        match event {
            EventType::Created => &mut self.created,
            EventType::Updated => &mut self.updated,
            EventType::Deleted => &mut self.deleted,
        }
    }

    /// The settings of one event.
    pub fn event(&self, event: EventType) -> &EventSettings {
        match event {
            EventType::Created => &self.created,
            EventType::Updated => &self.updated,
            EventType::Deleted => &self.deleted,
        }
    }
}

fn redact_or_raw(text: &str) -> String {
    let text = text.trim();
    match url::Url::parse(text) {
        Ok(_) => redact(text),
        Err(_) => text.to_owned(),
    }
}

/// Keeps error bodies small when someone pastes a huge line.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> CallbackUrl {
        CallbackUrl::parse(text).unwrap()
    }

    #[test]
    fn query_is_appended_with_question_mark() {
        let u = url("https://example.com/hook").kianda_request(
            "leave-request-7",
            "leave-request",
            EventType::Created,
        );
        assert_eq!(
            u.as_str(),
            "https://example.com/hook?instanceID=leave-request-7&processName=leave-request&eventType=created"
        );
    }

    #[test]
    fn existing_query_is_kept_and_fragment_dropped() {
        let u = url("https://example.com/hook?key=a%20b&x=1#frag").kianda_request(
            "p-1",
            "p",
            EventType::Deleted,
        );
        assert_eq!(
            u.as_str(),
            "https://example.com/hook?key=a%20b&x=1&instanceID=p-1&processName=p&eventType=deleted"
        );
    }

    #[test]
    fn values_are_percent_encoded() {
        let q = kianda_query("a&b=c d", "ü/?", EventType::Updated);
        assert_eq!(
            q,
            "instanceID=a%26b%3Dc+d&processName=%C3%BC%2F%3F&eventType=updated"
        );
    }

    #[test]
    fn credentials_leave_the_request_url_and_the_redacted_form() {
        let u = url("https://user:secret@example.com/h");
        assert_eq!(u.redacted(), "https://example.com/h");
        assert!(!format!("{u:?}").contains("secret"));
        let req = u.kianda_request("p-1", "p", EventType::Created);
        assert!(!req.as_str().contains("secret"));
    }

    #[test]
    fn host_keys_include_the_port() {
        assert_eq!(url("https://Example.com/a").host_key(), "example.com:443");
        assert_eq!(url("http://10.0.0.1:8080/a").host_key(), "10.0.0.1:8080");
        assert_eq!(url("http://[::1]/").host_key(), "[::1]:80");
    }

    #[test]
    fn url_rules() {
        assert!(
            CallbackUrl::parse("/relative")
                .unwrap_err()
                .0
                .contains("relative")
        );
        assert!(
            CallbackUrl::parse("ftp://example.com/")
                .unwrap_err()
                .0
                .contains("ftp")
        );
        assert!(
            CallbackUrl::parse("http://")
                .unwrap_err()
                .0
                .contains("host")
        );
        assert!(CallbackUrl::parse("mailto:a@b.c").is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(CallbackUrl::parse(&long).unwrap_err().0.contains("2048"));
        assert!(CallbackUrl::parse("  https://example.com/ok  ").is_ok());
    }

    #[test]
    fn settings_collect_every_problem_with_its_line() {
        let created = vec![
            "https://a.example/".to_owned(),
            "".to_owned(),
            "nope".to_owned(),
        ];
        let updated = vec!["ftp://x.example/".to_owned()];
        let err = WebhookSettings::parse([(true, &created), (false, &updated), (false, &[])])
            .unwrap_err()
            .shown;
        assert_eq!(err.len(), 2);
        assert_eq!(
            (err[0].event_type, err[0].line),
            (EventType::Created, Some(3))
        );
        assert_eq!(
            (err[1].event_type, err[1].line),
            (EventType::Updated, Some(1))
        );
    }

    #[test]
    fn huge_lists_are_refused_whole_and_problems_are_capped() {
        let huge: Vec<String> = (0..60_000)
            .map(|i| format!("https://a.example/{i}"))
            .collect();
        let err = WebhookSettings::parse([(true, &huge), (false, &[]), (false, &[])]).unwrap_err();
        assert_eq!(err.total, 1);
        assert_eq!(
            err.shown[0].message,
            "60000 lines given; at most 100 lines (20 distinct URLs) are read per event"
        );
        let bad: Vec<String> = (0..100).map(|i| format!("nope {i}")).collect();
        let err = WebhookSettings::parse([(true, &bad), (true, &bad), (false, &[])]).unwrap_err();
        assert_eq!((err.shown.len(), err.total), (MAX_PROBLEMS_SHOWN, 200));
    }

    #[test]
    fn settings_dedupe_and_limit() {
        let dup = vec![
            "https://a.example/".to_owned(),
            "https://a.example/".to_owned(),
        ];
        let s = WebhookSettings::parse([(true, &dup), (false, &[]), (false, &[])]).unwrap();
        assert_eq!(s.created.urls.len(), 1);
        let many: Vec<String> = (0..21).map(|i| format!("https://a.example/{i}")).collect();
        let err = WebhookSettings::parse([(true, &many), (false, &[]), (false, &[])]).unwrap_err();
        assert!(err.shown[0].message.contains("at most 20"));
    }

    #[test]
    fn spaces_and_control_characters_are_refused_not_encoded() {
        let space = CallbackUrl::parse("https://example.com/a b").unwrap_err();
        assert_eq!(space.0, "the URL contains a space; write it as %20");
        let nul = CallbackUrl::parse("https://example.com/\0").unwrap_err();
        assert!(nul.0.contains("U+0000"), "{nul}");
        assert!(CallbackUrl::parse("https://exam\tple.com/").is_err());
    }

    proptest::proptest! {
        /// Any lists of lines parse or are refused with problems, never a panic; accepted
        /// settings, written out and parsed again, are the same settings.
        #[test]
        fn settings_round_trip(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "https://[a-c]\\.example/[a-z]{0,3}",
                    "\\PC{0,30}",
                    proptest::strategy::Just(String::new()),
                ],
                0..30,
            ),
        ) {
            let none: Vec<String> = Vec::new();
            if let Ok(settings) = WebhookSettings::parse([(true, &lines), (false, &none), (true, &lines)]) {
                let again: Vec<String> =
                    settings.created.urls.iter().map(|u| u.as_str().to_owned()).collect();
                let reread = WebhookSettings::parse([(true, &again), (false, &none), (true, &again)]).unwrap();
                proptest::prop_assert_eq!(reread, settings);
            }
        }

        /// Any text parses or is refused without panicking; an accepted URL parses again to
        /// itself, and the callback's query carries the instance and process exactly.
        #[test]
        fn urls_and_queries_round_trip(
            text in "\\PC{0,60}",
            path in "[a-zA-Z0-9/%?&=#:@ .~+-]{0,40}",
            id in proptest::prelude::any::<String>(),
            name in proptest::prelude::any::<String>(),
        ) {
            let _ = CallbackUrl::parse(&text);
            if let Ok(u) = CallbackUrl::parse(&format!("https://example.com/{path}")) {
                proptest::prop_assert_eq!(&CallbackUrl::parse(u.as_str()).unwrap(), &u);
                let request = u.kianda_request(&id, &name, EventType::Updated);
                let pairs: Vec<(String, String)> = request.query_pairs().into_owned().collect();
                let ours = [
                    ("instanceID".to_owned(), id.clone()),
                    ("processName".to_owned(), name.clone()),
                    ("eventType".to_owned(), "updated".to_owned()),
                ];
                proptest::prop_assert_eq!(&pairs[pairs.len() - 3..], &ours[..]);
            }
        }
    }
}
