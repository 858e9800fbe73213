//! How token requests are sent ([`TokenHttp`]) and how token answers are read: the
//! `access_token` with `expires_in` or `expires_on`, or the AAD error (`error`,
//! `error_description`) turned into an error that says what to check.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::AccessToken;
use crate::azure::auth::Secret;
use crate::error::{Error, ErrorInfo};
use crate::wire::clock::{Clock, SystemClock};
use crate::wire::pipeline::{NoAuth, Pipeline};
use crate::wire::redact::Redactor;
use crate::wire::retry::{Idempotency, RetryPolicy};
use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

/// How token requests are sent: their own pipeline (no signer, a short retry policy) and
/// the clock that turns `expires_in` into an instant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenHttp {
    pipeline: Pipeline,
    clock: Arc<dyn Clock>,
}

impl TokenHttp {
    /// Token requests over `transport`, with 3 attempts for transient failures and the
    /// system clock.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        let retry = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        TokenHttp {
            pipeline: Pipeline::new(transport, Arc::new(NoAuth)).with_retry(retry),
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the retry policy of token requests.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.pipeline = self.pipeline.with_retry(policy);
        self
    }

    /// Replaces the clock (tests pin it to get deterministic expiry instants).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.pipeline = self.pipeline.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// The current time on this client's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The clock.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Sends a token request and parses the answer. `source` names the flow in errors,
    /// `hint` says what to check when the endpoint refuses, `redactor` scrubs anything
    /// secret the endpoint might echo.
    pub(crate) async fn fetch(
        &self,
        request: HttpRequest,
        source: &str,
        hint: &str,
        redactor: &Redactor,
    ) -> Result<AccessToken, Error> {
        let operation = format!("get an Entra ID token ({source})");
        let response = self
            .pipeline
            .send(request, Idempotency::Idempotent)
            .await
            .map_err(|e| e.during(operation.clone()))?;
        if !response.is_success() {
            return Err(refusal(&response, hint, redactor).during(operation));
        }
        parse_token_response(&response.body, self.now()).map_err(|e| e.during(operation))
    }
}

/// The error for a token endpoint's non-2xx answer: the AAD `error` code and
/// `error_description` (shortened, scrubbed) and what to check.
fn refusal(response: &HttpResponse, hint: &str, redactor: &Redactor) -> Error {
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let text = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let code = text("error").or_else(|| {
        body.pointer("/error/code")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    });
    let description = text("error_description")
        .or_else(|| text("message"))
        .or_else(|| {
            body.pointer("/error/message")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .map(|d| {
            let first_line = d.lines().next().unwrap_or_default();
            let cut: String = first_line.chars().take(300).collect();
            redactor.redact_text(&cut)
        });
    let said = match (&code, &description) {
        (Some(c), Some(d)) => format!(": {c}: {d}"),
        (Some(c), None) => format!(": {c}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    };
    let mut info = ErrorInfo::new(format!(
        "the token endpoint answered {}{said}; {hint}",
        response.status
    ))
    .with_status(response.status);
    if let Some(code) = code {
        info = info.with_code(redactor.redact_text(&code.chars().take(80).collect::<String>()));
    }
    let info = Box::new(info);
    match response.status {
        400 | 401 | 403 => Error::Auth(info),
        429 => Error::Throttled {
            retry_after: None,
            info,
        },
        _ => Error::Unexpected(info),
    }
}

/// Parses a token answer: `access_token`, and `expires_in` (seconds from now) or
/// `expires_on` (epoch seconds), each a number or a string of digits (IMDS and App Service
/// send strings). A missing or expired token is an error.
fn parse_token_response(body: &[u8], now: DateTime<Utc>) -> Result<AccessToken, Error> {
    let malformed = |what: &str| {
        Error::unexpected(format!(
            "the token endpoint's answer is not a usable token ({what}); check the endpoint \
             (AZURE_AUTHORITY_HOST, IDENTITY_ENDPOINT) points at Entra ID or a managed identity \
             endpoint"
        ))
    };
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("not JSON"))?;
    let token = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| malformed("no `access_token`"))?;
    let expires_on = match (
        json.get("expires_in").and_then(seconds),
        json.get("expires_on").and_then(seconds),
    ) {
        (Some(after), _) => now.checked_add_signed(chrono::Duration::seconds(after)),
        (None, Some(epoch)) => DateTime::from_timestamp(epoch, 0),
        (None, None) => None,
    }
    .ok_or_else(|| malformed("no valid `expires_in` or `expires_on`"))?;
    token_valid_at(
        AccessToken {
            token: Secret::new(token.trim()),
            expires_on,
        },
        now,
    )
}

/// The token, unless it is already expired at `now` (a wrong machine clock, or a stale
/// answer).
pub(crate) fn token_valid_at(token: AccessToken, now: DateTime<Utc>) -> Result<AccessToken, Error> {
    if token.expires_on <= now {
        return Err(Error::unexpected(format!(
            "the token received expired at {} (now {}); check the machine clock",
            token.expires_on.to_rfc3339(),
            now.to_rfc3339()
        )));
    }
    Ok(token)
}

/// Whole seconds from a JSON number or a string of digits.
fn seconds(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn token_answers_with_numbers_or_strings_parse() {
        for body in [
            r#"{"access_token":"tok","expires_in":3599,"token_type":"Bearer"}"#,
            r#"{"access_token":"tok","expires_in":"3599","expires_on":"1"}"#,
        ] {
            let t = parse_token_response(body.as_bytes(), now()).expect(body);
            assert_eq!(t.token.expose(), "tok");
            assert_eq!(t.expires_on, now() + chrono::Duration::seconds(3599));
        }
        let epoch = (now() + chrono::Duration::hours(1)).timestamp();
        for body in [
            format!(r#"{{"access_token":"tok","expires_on":{epoch}}}"#),
            format!(r#"{{"access_token":"tok","expires_on":"{epoch}"}}"#),
        ] {
            let t = parse_token_response(body.as_bytes(), now()).expect(&body);
            assert_eq!(t.expires_on.timestamp(), epoch);
        }
    }

    #[test]
    fn malformed_or_expired_answers_are_errors_without_the_token() {
        for body in [
            "<html>",
            r#"{"token":"x"}"#,
            r#"{"access_token":"","expires_in":10}"#,
            r#"{"access_token":"SECRETTOKEN"}"#,
            r#"{"access_token":"SECRETTOKEN","expires_in":"soon"}"#,
            r#"{"access_token":"SECRETTOKEN","expires_on":5}"#,
        ] {
            let err = parse_token_response(body.as_bytes(), now()).expect_err(body);
            let text = err.to_string();
            assert!(!text.contains("SECRETTOKEN"), "{text}");
            assert!(text.contains("token"), "{text}");
        }
    }
}
