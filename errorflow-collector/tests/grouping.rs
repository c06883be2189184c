//! Grouping snapshots: each fixture under `tests/fixtures/grouping/` goes
//! through the real pipeline, and its title, culprit, error type and
//! grouping components are snapshotted, so that any change to grouping
//! shows up in review. Fixtures named `custom_*` are bodies of the legacy
//! `POST /api/errors` endpoint; the others are protocol events.
//!
//! Run with `INSTA_UPDATE=always cargo test -p errorflow-collector --test grouping`
//! after an intended change, then review the `.snap` diffs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use errorflow_collector::pipeline::{self, fingerprint, Context, Limits};
use errorflow_sdk::protocol::Event;
use uuid::Uuid;

fn ctx() -> Context {
    Context {
        project_id: 1,
        received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    }
}

fn fixtures() -> Vec<(String, Event)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grouping");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let body = std::fs::read(&path).unwrap();
            let event = if name.starts_with("custom_") {
                pipeline::decode_custom(&body, Uuid::from_u128(1)).unwrap()
            } else {
                let batch = format!(r#"{{"events": [{}]}}"#, String::from_utf8(body).unwrap());
                let mut events =
                    pipeline::decode_batch(batch.as_bytes(), &Limits::default()).unwrap();
                events.remove(0).unwrap()
            };
            (name, event)
        })
        .collect()
}

#[test]
fn grouping_snapshots() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 6, "fixtures missing");
    for (name, event) in fixtures {
        let n = pipeline::process(event, &ctx(), &Limits::default()).unwrap();
        let mut out = String::new();
        writeln!(out, "title:       {}", n.title).unwrap();
        writeln!(out, "culprit:     {}", n.culprit.as_deref().unwrap_or("-")).unwrap();
        writeln!(out, "error_type:  {}", n.error_type).unwrap();
        writeln!(out, "message:     {:?}", n.message).unwrap();
        writeln!(out, "cluster_key: {}", n.cluster_key).unwrap();
        writeln!(out, "environment: {}", n.environment).unwrap();
        writeln!(out, "path:        {}", n.path).unwrap();
        writeln!(out, "trace_id:    {}", n.trace_id).unwrap();
        writeln!(out, "fingerprint: {}", n.fingerprint).unwrap();
        writeln!(out, "components:").unwrap();
        for c in fingerprint::components(&n.event) {
            writeln!(out, "  - {c}").unwrap();
        }
        insta::assert_snapshot!(name, out);
    }
}

/// What a redeploy changes (ids, times, line and column numbers, addresses,
/// symbol hashes, the deploy directory) must not split an incident.
#[test]
fn redeploys_and_new_occurrences_keep_the_fingerprint() {
    for (name, event) in fixtures() {
        let before = pipeline::process(event.clone(), &ctx(), &Limits::default()).unwrap();
        let json = serde_json::to_string(&event)
            .unwrap()
            .replace("20261127", "20261201")
            .replace("/app/", "/srv/app/");
        let mut moved: Event = serde_json::from_str(&json).unwrap();
        moved.event_id = Uuid::from_u128(99);
        moved.timestamp = None;
        for exception in &mut moved.exception {
            for frame in exception
                .stacktrace
                .iter_mut()
                .flat_map(|s| s.frames.iter_mut())
            {
                frame.lineno = frame.lineno.map(|l| l + 17);
                frame.colno = frame.colno.map(|c| c + 3);
                frame.instruction_addr = Some("0xdeadbeef".into());
                if let Some(f) = &mut frame.function {
                    if let Some(i) = f.find("::h") {
                        if f.len() - i == 19 {
                            f.replace_range(i + 3.., "ffffffffffffffff");
                        }
                    }
                }
            }
        }
        let after = pipeline::process(moved, &ctx(), &Limits::default()).unwrap();
        assert_eq!(before.fingerprint, after.fingerprint, "fixture {name}");
    }
}
