//! Normalisation snapshot: a messy event (blank message, control
//! characters, oversized strings and collections, a timestamp in the
//! future) through `normalize` with tight limits. The snapshot shows every
//! rule at once; the second half checks that normalising again changes
//! nothing.
//!
//! Run with `INSTA_UPDATE=always cargo test -p errorflow-collector --test normalize`
//! after an intended change, then review the `.snap` diff.

use chrono::{TimeZone, Utc};
use errorflow_collector::pipeline::{decode_batch, normalize::normalize, Context, Limits};

#[test]
fn messy_event_snapshot() {
    let ctx = Context {
        project_id: 1,
        received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    };
    let limits = Limits {
        max_message_chars: 30,
        max_name_chars: 12,
        max_value_chars: 24,
        max_tags: 3,
        max_breadcrumbs: 2,
        max_exceptions: 1,
        max_frames: 3,
        ..Limits::default()
    };
    let fixture = include_str!("fixtures/normalize_messy.json");
    let body = format!(r#"{{"events": [{fixture}]}}"#);
    let event = decode_batch(body.as_bytes(), &limits)
        .unwrap()
        .remove(0)
        .unwrap();

    let once = normalize(event, &ctx, &limits).unwrap();
    insta::assert_json_snapshot!("messy_event", once);

    let twice = normalize(once.clone(), &ctx, &limits).unwrap();
    assert_eq!(twice, once);
}
