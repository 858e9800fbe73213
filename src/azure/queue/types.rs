//! Queue Storage values: validated protocol limits (message count, visibility timeout, time to
//! live) and the messages, queue lists and properties the service returns.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;

/// Seven days, the longest visibility timeout (and initial delay) the service accepts.
pub const MAX_VISIBILITY_SECS: u32 = 7 * 24 * 60 * 60;

/// The longest message time to live, in seconds, that the service accepts with the API
/// version this client sends (`2021-12-02`): since `2017-07-29` any positive 32-bit value
/// (about 68 years) or `-1` ([`MessageTtl::Never`]); before it, 7 days.
pub const MAX_MESSAGE_TTL_SECS: u32 = i32::MAX as u32;

/// How many messages one Get Messages / Peek Messages call asks for: 1 to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageCount(u8);

impl MessageCount {
    /// The most messages one call can return.
    pub const MAX: MessageCount = MessageCount(32);
    /// One message.
    pub const ONE: MessageCount = MessageCount(1);

    /// A count in `1..=32`; anything else is [`Error::InvalidInput`].
    pub fn new(count: u32) -> Result<Self, Error> {
        match u8::try_from(count) {
            Ok(n @ 1..=32) => Ok(MessageCount(n)),
            _ => Err(Error::invalid_input(format!(
                "message count {count} is out of range: Queue Storage returns 1 to 32 messages per call"
            ))),
        }
    }

    /// The count as a number.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

/// A visibility timeout (or initial delay) in whole seconds: 0 to 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VisibilityTimeout(u32);

impl VisibilityTimeout {
    /// Visible at once.
    pub const ZERO: VisibilityTimeout = VisibilityTimeout(0);
    /// The longest timeout the service allows (7 days).
    pub const MAX: VisibilityTimeout = VisibilityTimeout(MAX_VISIBILITY_SECS);

    /// A timeout of `secs` seconds; over 7 days is [`Error::InvalidInput`].
    pub fn from_secs(secs: u32) -> Result<Self, Error> {
        if secs > MAX_VISIBILITY_SECS {
            return Err(Error::invalid_input(format!(
                "visibility timeout {secs} s is over the 7-day limit ({MAX_VISIBILITY_SECS} s); \
                 for longer delays re-enqueue the message when it comes back"
            )));
        }
        Ok(VisibilityTimeout(secs))
    }

    /// A timeout from a duration, rounded up to whole seconds; over 7 days is an error.
    pub fn from_duration(duration: Duration) -> Result<Self, Error> {
        let secs = duration
            .as_secs()
            .saturating_add(u64::from(duration.subsec_nanos() > 0));
        Self::from_secs(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// The timeout in seconds.
    pub fn as_secs(self) -> u32 {
        self.0
    }
}

/// How long a message lives before the service drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageTtl {
    /// The message never expires (`messagettl=-1`).
    Never,
    /// The message expires this many seconds (at least 1) after it is inserted.
    Seconds(u32),
}

impl MessageTtl {
    /// A time to live of `secs` seconds; zero is [`Error::InvalidInput`] (use [`MessageTtl::Never`]
    /// for messages that should not expire).
    /// Over [`MAX_MESSAGE_TTL_SECS`] is refused too.
    pub fn from_secs(secs: u32) -> Result<Self, Error> {
        let ttl = MessageTtl::Seconds(secs);
        ttl.validate()?;
        Ok(ttl)
    }

    /// Checks the value the service would refuse (a `Seconds` built directly is checked too).
    pub(crate) fn validate(self) -> Result<(), Error> {
        match self {
            MessageTtl::Seconds(0) => Err(Error::invalid_input(
                "message time to live must be at least 1 second (use MessageTtl::Never for no expiry)",
            )),
            MessageTtl::Seconds(secs) if secs > MAX_MESSAGE_TTL_SECS => {
                Err(Error::invalid_input(format!(
                    "message time to live {secs} s is over the service maximum of \
                     {MAX_MESSAGE_TTL_SECS} s; use MessageTtl::Never for messages that should not expire"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The `messagettl` query value.
    pub(crate) fn query_value(self) -> String {
        match self {
            MessageTtl::Never => "-1".to_string(),
            MessageTtl::Seconds(s) => s.to_string(),
        }
    }
}

/// Options for Put Message. The default is: visible at once, the service's default TTL (7 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PutOptions {
    /// Keeps the message invisible for this long after it is inserted (delayed delivery).
    pub visibility_delay: Option<VisibilityTimeout>,
    /// How long the message lives; `None` = the service default (7 days).
    pub ttl: Option<MessageTtl>,
}

impl PutOptions {
    /// Options for a message that becomes visible after `delay`, rounded up to whole seconds
    /// (a non-zero delay under a second becomes 1 s, never 0); over 7 days is an error.
    pub fn delayed(delay: std::time::Duration) -> Result<Self, Error> {
        Ok(PutOptions {
            visibility_delay: Some(VisibilityTimeout::from_duration(delay)?),
            ttl: None,
        })
    }

    /// Checks what the service would refuse: a TTL out of range, a delay not shorter than the
    /// TTL (without a TTL, the service default of 7 days).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if let Some(ttl) = self.ttl {
            ttl.validate()?;
        }
        let ttl = match self.ttl {
            None => Some(MAX_VISIBILITY_SECS),
            Some(MessageTtl::Seconds(secs)) => Some(secs),
            Some(MessageTtl::Never) => None,
        };
        if let (Some(delay), Some(ttl)) = (self.visibility_delay, ttl)
            && delay.as_secs() >= ttl
        {
            return Err(Error::invalid_input(format!(
                "visibility delay {} s must be shorter than the time to live {ttl} s",
                delay.as_secs()
            )));
        }
        Ok(())
    }
}

/// A message taken from the queue by Get Messages: invisible to others until `next_visible`.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The service's message id.
    pub id: String,
    /// Proof of this dequeue; needed to delete or update the message. Opaque.
    pub pop_receipt: String,
    /// How many times the message has been dequeued (1 on first delivery).
    pub dequeue_count: u32,
    /// The message text as put (XML-unescaped).
    pub text: String,
    /// When the message was put.
    pub insertion_time: DateTime<Utc>,
    /// When the service will drop it (year 9999 for messages that never expire).
    pub expiration_time: DateTime<Utc>,
    /// When it becomes visible again unless deleted or updated.
    pub next_visible: DateTime<Utc>,
}

impl fmt::Debug for QueueMessage {
    /// Shows the text length, not the text (messages may carry user data).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMessage")
            .field("id", &self.id)
            .field("dequeue_count", &self.dequeue_count)
            .field("text_len", &self.text.len())
            .field("insertion_time", &self.insertion_time)
            .field("expiration_time", &self.expiration_time)
            .field("next_visible", &self.next_visible)
            .finish_non_exhaustive()
    }
}

/// A message seen by Peek Messages: not dequeued, so there is no pop receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedMessage {
    /// The service's message id.
    pub id: String,
    /// How many times the message has been dequeued so far.
    pub dequeue_count: u32,
    /// The message text.
    pub text: String,
    /// When the message was put.
    pub insertion_time: DateTime<Utc>,
    /// When the service will drop it.
    pub expiration_time: DateTime<Utc>,
}

/// What Put Message returns: the new message's id and a pop receipt usable at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The service's message id.
    pub id: String,
    /// A pop receipt for deleting or updating the message without receiving it first.
    pub pop_receipt: String,
    /// When the message was put.
    pub insertion_time: DateTime<Utc>,
    /// When the service will drop it.
    pub expiration_time: DateTime<Utc>,
    /// When it first becomes visible (later than now for delayed messages).
    pub next_visible: DateTime<Utc>,
}

/// What Update Message returns: the receipt to use from now on and the new visibility time.
/// This is how a long job renews its lease on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatedMessage {
    /// The new pop receipt; the old one no longer works.
    pub pop_receipt: String,
    /// When the message becomes visible again unless deleted or updated.
    pub next_visible: DateTime<Utc>,
}

/// Queue properties from Get Queue Metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueProperties {
    /// Approximate number of messages, invisible ones included.
    pub approximate_message_count: u64,
    /// User metadata (`x-ms-meta-*` headers, names without the prefix, lower-case).
    pub metadata: Vec<(String, String)>,
}

/// One queue in a List Queues answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// The queue name.
    pub name: String,
    /// Its metadata (asked for with `include=metadata`).
    pub metadata: Vec<(String, String)>,
}

/// One page of List Queues.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueListPage {
    /// The queues on this page.
    pub queues: Vec<QueueItem>,
    /// Opaque marker for the next page; `None` on the last page.
    pub next_marker: Option<String>,
}

/// Checks a queue name against the service rules: 3 to 63 characters, lower-case letters,
/// digits and single hyphens, starting and ending with a letter or digit.
pub(crate) fn validate_queue_name(name: &str) -> Result<(), Error> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok = (3..=63).contains(&name.len())
        && valid_chars
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "queue name `{name}` is invalid: use 3-63 lower-case letters, digits and single \
             hyphens, starting and ending with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_count_accepts_1_to_32_only() {
        assert!(MessageCount::new(0).is_err());
        assert_eq!(MessageCount::new(1).unwrap().get(), 1);
        assert_eq!(MessageCount::new(32).unwrap(), MessageCount::MAX);
        assert!(matches!(MessageCount::new(33), Err(Error::InvalidInput(_))));
        assert!(MessageCount::new(u32::MAX).is_err());
    }

    #[test]
    fn visibility_timeout_is_capped_at_seven_days() {
        assert_eq!(
            VisibilityTimeout::from_secs(604_800).unwrap(),
            VisibilityTimeout::MAX
        );
        assert!(VisibilityTimeout::from_secs(604_801).is_err());
        assert_eq!(
            VisibilityTimeout::from_duration(Duration::from_millis(1_500))
                .unwrap()
                .as_secs(),
            2
        );
        assert!(VisibilityTimeout::from_duration(Duration::from_secs(u64::MAX)).is_err());
    }

    #[test]
    fn ttl_zero_is_refused_and_never_is_minus_one() {
        assert!(MessageTtl::from_secs(0).is_err());
        assert_eq!(MessageTtl::Never.query_value(), "-1");
        assert_eq!(MessageTtl::from_secs(60).unwrap().query_value(), "60");
    }

    #[test]
    fn delay_must_be_shorter_than_ttl() {
        let opts = |delay, ttl| PutOptions {
            visibility_delay: Some(VisibilityTimeout::from_secs(delay).unwrap()),
            ttl: Some(ttl),
        };
        assert!(opts(60, MessageTtl::Seconds(60)).validate().is_err());
        assert!(opts(59, MessageTtl::Seconds(60)).validate().is_ok());
        assert!(opts(600, MessageTtl::Never).validate().is_ok());
        assert!(PutOptions::default().validate().is_ok());
    }

    #[test]
    fn queue_names_follow_service_rules() {
        for good in ["abc", "jobs-1", "a1b", &"a".repeat(63)] {
            assert!(validate_queue_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Jobs",
            "-abc",
            "abc-",
            "a--b",
            "a_b",
            "",
            &"a".repeat(64),
        ] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_debug_hides_the_text() {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let msg = QueueMessage {
            id: "m".into(),
            pop_receipt: "p".into(),
            dequeue_count: 1,
            text: "secret payload".into(),
            insertion_time: t,
            expiration_time: t,
            next_visible: t,
        };
        assert!(!format!("{msg:?}").contains("secret"));
    }
}
