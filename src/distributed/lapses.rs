//! Deliveries that lost their lease while the job was making progress, so that they do not
//! count toward the poison limit.
//!
//! A message received more than `max_dequeue` times is poisoned without being processed:
//! that is how a message that crashes its worker every time is stopped. But a delivery also
//! ends without the job finishing when its lease lapses while the job runs (a queue service
//! that stalls for longer than the lease answers no renewal), and a healthy job should not
//! fail its run because the service stalled five times. So a worker that sees a lease lapse
//! under a running job records it in the coordination store (`flowcraft:lapsed:<message>`),
//! and the poison check leaves such deliveries out of the count, up to `max_dequeue` of them:
//! a message that keeps losing its lease (a node that blocks its worker) is still poisoned,
//! after twice the limit at most. Nothing depends on the record: when the coordination store
//! is unavailable, every delivery counts, as before.

use crate::distributed::worker::Worker;
use std::time::Duration;

/// How long a lapse is remembered.
const LAPSE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The coordination key counting the lapsed leases of message `id`.
fn lapse_key(id: &str) -> String {
    format!("flowcraft:lapsed:{id}")
}

/// The deliveries of a message that count toward the poison limit `max`: all of them but
/// the `lapsed` ones, of which at most `max` are left out.
pub(crate) fn counted_deliveries(dequeue_count: u32, lapsed: u32, max: u32) -> u32 {
    dequeue_count.saturating_sub(lapsed.min(max))
}

impl Worker {
    /// Records that a delivery of message `id` lost its lease while its job ran (best
    /// effort: a failure is only logged).
    pub(crate) async fn note_lapsed_lease(&self, id: &str) {
        let coordination = self.backends.coordination.as_ref();
        if let Err(e) = coordination
            .counter_add(&lapse_key(id), 1, Some(LAPSE_TTL))
            .await
        {
            tracing::debug!(message_id = id, error = %e, "could not record a lapsed lease");
        }
    }

    /// How many deliveries of message `id` are recorded as lapsed (0 when unknown).
    pub(crate) async fn lapsed_leases(&self, id: &str) -> u32 {
        match self.backends.coordination.get(&lapse_key(id)).await {
            Ok(Some(text)) => text.trim().parse().unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::debug!(message_id = id, error = %e, "could not read lapsed leases");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapsed_deliveries_are_left_out_up_to_the_limit() {
        assert_eq!(counted_deliveries(6, 0, 5), 6);
        assert_eq!(counted_deliveries(6, 2, 5), 4);
        assert_eq!(
            counted_deliveries(11, 9, 5),
            6,
            "at most `max` are left out"
        );
        assert_eq!(counted_deliveries(1, 3, 5), 0);
    }
}
