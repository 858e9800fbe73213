//! `sleep` and `wait`: the two nodes that pause a run.
//!
//! - `sleep` (`params.duration`: milliseconds as a non-negative number, or `<n>s|m|h|d`)
//!   marks itself awaiting with reason `timer` and `wakeUpAt`, and outputs its input. The
//!   runtime completes it when the timer fires (in-process: it waits; distributed: a delayed
//!   message). An invalid duration fails the node (fatal: retrying cannot fix it).
//! - `wait` marks itself awaiting with reason `external_event` and outputs nothing; `resume`
//!   completes it with an action and an output. `params.eventName` is informational.

use crate::flow::context::AwaitingDetails;
use crate::flow::node::{NodeContext, NodeError, NodeResult};
use serde_json::Value;
use std::time::Duration;

/// Parses a sleep duration: a non-negative number of milliseconds, or a string of digits
/// followed by `s`, `m`, `h` or `d`.
///
/// ```
/// use flowcraft_azure::flow::builtins::timing::parse_duration;
/// use serde_json::json;
/// use std::time::Duration;
/// assert_eq!(parse_duration(&json!("5m")), Ok(Duration::from_secs(300)));
/// assert_eq!(parse_duration(&json!(250)), Ok(Duration::from_millis(250)));
/// assert!(parse_duration(&json!("soon")).is_err());
/// ```
pub fn parse_duration(value: &Value) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid sleep duration {value}: use milliseconds (a number >= 0) or a string like \
             \"10s\", \"5m\", \"2h\", \"1d\""
        )
    };
    match value {
        Value::Number(n) => {
            let ms = n.as_f64().filter(|ms| ms.is_finite() && *ms >= 0.0);
            let ms = ms.ok_or_else(invalid)?;
            Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| invalid())
        }
        Value::String(s) => {
            let unit = s.chars().last().ok_or_else(invalid)?;
            let digits = &s[..s.len() - unit.len_utf8()];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let n: u64 = digits.parse().map_err(|_| invalid())?;
            let seconds_per_unit = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(invalid()),
            };
            n.checked_mul(seconds_per_unit)
                .map(Duration::from_secs)
                .ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

/// The `sleep` node.
pub async fn sleep(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let raw = ctx.params().get("duration").cloned().unwrap_or(Value::Null);
    let duration = parse_duration(&raw)
        .map_err(|e| NodeError::fatal(format!("sleep node '{}': {e}", ctx.node_id())))?;
    let wake_up_at = chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| ctx.environment().sources.now().checked_add_signed(d))
        .ok_or_else(|| {
            NodeError::fatal(format!(
                "sleep node '{}': the duration {raw} is too long",
                ctx.node_id()
            ))
        })?;
    ctx.mark_awaiting(AwaitingDetails::timer(wake_up_at));
    Ok(NodeResult {
        output: ctx.input().cloned(),
        ..NodeResult::default()
    })
}

/// The `wait` node.
pub async fn wait(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    ctx.mark_awaiting(AwaitingDetails::external_event());
    Ok(NodeResult::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration(&json!("10s")), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration(&json!("1m")), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration(&json!("2h")), Ok(Duration::from_secs(7200)));
        assert_eq!(
            parse_duration(&json!("1d")),
            Ok(Duration::from_secs(86_400))
        );
        assert_eq!(parse_duration(&json!(0)), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration(&json!(1500)),
            Ok(Duration::from_millis(1500))
        );
    }

    #[test]
    fn invalid_durations_are_rejected_with_a_hint() {
        for bad in [
            json!(-1),
            json!("10"),
            json!("s"),
            json!("1.5m"),
            json!("-1s"),
            json!("10w"),
            json!("1é"),
            json!(true),
            json!(null),
            json!("99999999999999999999d"),
        ] {
            let err = parse_duration(&bad);
            assert!(err.is_err(), "{bad} should be rejected");
            assert!(err.err().unwrap_or_default().contains("10s"));
        }
    }
}
