//! Property tests for the wire layer: redaction never lets a registered secret through,
//! SharedKey signatures do not depend on header or query order, and retry waits stay within
//! the policy's bounds whatever the seed.

use proptest::prelude::*;
use std::time::Duration;

use flowcraft_azure::azure::auth::shared_key_string_to_sign;
use flowcraft_azure::wire::redact::Redactor;
use flowcraft_azure::wire::retry::RetryPolicy;
use flowcraft_azure::wire::transport::HttpRequest;

proptest! {
    #[test]
    fn registered_secret_never_survives_redaction(
        secret in "[A-Za-z0-9+/]{8,64}={0,2}",
        before in "[ -~]{0,40}",
        after in "[ -~]{0,40}",
    ) {
        let redactor = Redactor::new().with_secret(secret.clone());
        let text = format!("{before}{secret}{after}");
        prop_assert!(!redactor.redact_text(&text).contains(&secret));
        let url = format!("https://h/q?x={}&y=1", secret.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
        let redacted_url = redactor.redact_url(&url);
        prop_assert!(!redacted_url.contains(&secret));
    }

    #[test]
    fn sig_values_never_survive_url_redaction(sig in "[A-Za-z0-9%]{1,60}", other in "[a-z]{1,8}") {
        let url = format!("https://h/q?x{other}=1&sig={sig}&sv=2021-12-02");
        let redacted = Redactor::new().redact_url(&url);
        prop_assert!(redacted.contains("sig=REDACTED&"), "{}", redacted);
        let kept = format!("x{other}=1");
        prop_assert!(redacted.contains(&kept));
    }

    #[test]
    fn shared_key_string_to_sign_ignores_header_and_query_order(
        names in proptest::collection::btree_set("[a-z]{1,6}", 1..5),
        rotate in 0usize..5,
    ) {
        let names: Vec<String> = names.into_iter().collect();
        let query: Vec<String> = names.iter().map(|n| format!("{n}={n}v")).collect();
        let headers: Vec<(String, String)> =
            names.iter().map(|n| (format!("x-ms-meta-{n}"), format!("{n}-value"))).collect();
        let build = |q: &[String], h: &[(String, String)]| {
            let mut r = HttpRequest::parse("GET", format!("https://a.queue.core.windows.net/q?{}", q.join("&"))).expect("valid request");
            for (name, value) in h {
                r.set_header(name, value.as_str());
            }
            r
        };
        let mut q2 = query.clone();
        let mut h2 = headers.clone();
        let k = rotate % names.len();
        q2.rotate_left(k);
        h2.rotate_left(k);
        h2.reverse();
        let a = shared_key_string_to_sign("a", &build(&query, &headers));
        let b = shared_key_string_to_sign("a", &build(&q2, &h2));
        prop_assert!(a.is_ok());
        prop_assert_eq!(a.ok(), b.ok());
    }

    #[test]
    fn backoff_stays_within_half_and_full_capped_delay(seed in any::<u64>(), retry in 1u32..64) {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(3),
            ..RetryPolicy::default()
        };
        let mut rng = fastrand::Rng::with_seed(seed);
        let wait = policy.backoff(retry, &mut rng);
        let full = Duration::from_millis(50)
            .saturating_mul(1u32 << (retry - 1).min(30))
            .min(Duration::from_secs(3));
        prop_assert!(wait <= full && wait >= full / 2, "{:?} vs {:?}", wait, full);
    }
}
