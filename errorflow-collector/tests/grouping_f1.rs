//! Grouping quality on a labelled corpus of events from the real Sentry
//! SDKs (Python sentry-sdk, @sentry/node, the Rust `sentry` crate).
//!
//! `tests/fixtures/corpus/{python,node,rust}.jsonl` hold one event a line,
//! `{"label": "<service>/<bug site>", "event": <Sentry event as the SDK sent
//! it>}`; the label is the ground truth (one bug site = one incident). The
//! generators are in `tests/corpus_gen/` (see their headers to regenerate).
//! This is our own corpus: the held-out corpus is not in the
//! repository, so these figures say nothing certain about it.
//!
//! Every event goes through the code path of the Sentry endpoints
//! (`pipeline::sentry::map_event`, then `pipeline::process`); the
//! fingerprint is our grouping. Pairwise precision/recall/F1 are computed
//! for it and, on the same events, for two baselines: Bugsink's rule
//! (exception type + raw value, or the raw message) and the seed's
//! (`service:error_type`). Run with `--nocapture` to see the table.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{TimeZone, Utc};
use errorflow_collector::model::NormalizedEvent;
use errorflow_collector::pipeline::sentry::{map_event, SentryContext};
use errorflow_collector::pipeline::{self, Context, Limits};
use uuid::Uuid;

/// The acceptance threshold.
const MIN_F1: f64 = 0.95;

struct Labelled {
    platform: &'static str,
    label: String,
    event: NormalizedEvent,
}

fn corpus() -> Vec<Labelled> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let ctx = Context {
        project_id: 1,
        received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    };
    let limits = Limits::default();
    let mut out = Vec::new();
    for platform in ["python", "node", "rust"] {
        let path = dir.join(format!("{platform}.jsonl"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{platform}.jsonl:{}: {e}", n + 1));
            let label = record["label"].as_str().expect("label").to_owned();
            assert!(!label.is_empty(), "{platform}.jsonl:{}: empty label", n + 1);
            let payload = serde_json::to_vec(&record["event"]).unwrap();
            let sctx = SentryContext {
                fallback_event_id: Uuid::from_u128(n as u128 + 1),
            };
            let event = map_event(&payload, &sctx)
                .unwrap_or_else(|e| panic!("{platform}.jsonl:{}: {e}", n + 1));
            let event = pipeline::process(event, &ctx, &limits)
                .unwrap_or_else(|e| panic!("{platform}.jsonl:{}: {e}", n + 1));
            out.push(Labelled {
                platform,
                label,
                event,
            });
        }
    }
    out
}

/// Bugsink's grouping: the raised exception's type and its value as sent,
/// or the message as sent.
fn bugsink_key(e: &NormalizedEvent) -> String {
    let base = match e.event.exception.first() {
        Some(x) => format!("exc\u{1f}{}\u{1f}{}", x.ty, x.value),
        None => format!("msg\u{1f}{}", e.event.message.as_deref().unwrap_or("")),
    };
    // Per service, as each service would be a project of its own there.
    format!("{}\u{1f}{base}", e.service)
}

/// The seed's grouping: `service:error_type`.
fn seed_key(e: &NormalizedEvent) -> String {
    e.cluster_key.clone()
}

#[derive(Debug, Clone, Copy)]
struct Scores {
    precision: f64,
    recall: f64,
    f1: f64,
}

fn pairs(n: usize) -> u64 {
    (n as u64) * (n as u64).saturating_sub(1) / 2
}

/// Pairwise scores: a pair of events is a true positive when both the
/// grouping and the labels put them together.
fn pairwise<'a>(events: impl Iterator<Item = (&'a str, String)>) -> Scores {
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut by_label: HashMap<&str, usize> = HashMap::new();
    let mut by_both: HashMap<(String, &str), usize> = HashMap::new();
    for (label, key) in events {
        *by_key.entry(key.clone()).or_default() += 1;
        *by_label.entry(label).or_default() += 1;
        *by_both.entry((key, label)).or_default() += 1;
    }
    let tp: u64 = by_both.values().map(|&n| pairs(n)).sum();
    let predicted: u64 = by_key.values().map(|&n| pairs(n)).sum();
    let actual: u64 = by_label.values().map(|&n| pairs(n)).sum();
    let precision = if predicted == 0 {
        1.0
    } else {
        tp as f64 / predicted as f64
    };
    let recall = if actual == 0 {
        1.0
    } else {
        tp as f64 / actual as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Scores {
        precision,
        recall,
        f1,
    }
}

type Rule = fn(&NormalizedEvent) -> String;

fn ours(e: &NormalizedEvent) -> String {
    e.fingerprint.clone()
}

const RULES: [(&str, Rule); 3] = [
    ("errorflow", ours),
    ("bugsink (type + message)", bugsink_key),
    ("seed (service:error_type)", seed_key),
];

fn score(corpus: &[Labelled], platform: Option<&str>, rule: Rule) -> Scores {
    pairwise(
        corpus
            .iter()
            .filter(|l| platform.is_none_or(|p| l.platform == p))
            .map(|l| (l.label.as_str(), rule(&l.event))),
    )
}

/// What our grouping got wrong: labels split over several groups, and
/// groups holding several labels (printed to make a failure actionable).
fn mistakes(corpus: &[Labelled]) -> String {
    let mut groups_of: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut labels_of: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut title_of: HashMap<&str, &str> = HashMap::new();
    for l in corpus {
        *groups_of
            .entry(&l.label)
            .or_default()
            .entry(&l.event.fingerprint)
            .or_default() += 1;
        *labels_of
            .entry(&l.event.fingerprint)
            .or_default()
            .entry(&l.label)
            .or_default() += 1;
        title_of.insert(&l.event.fingerprint, &l.event.title);
    }
    let mut out = String::new();
    for (label, groups) in &groups_of {
        if groups.len() > 1 {
            out.push_str(&format!("split  {label}:\n"));
            for (fp, n) in groups {
                out.push_str(&format!("         {n:3} × {}\n", title_of[fp]));
            }
        }
    }
    for (fp, labels) in &labels_of {
        if labels.len() > 1 {
            out.push_str(&format!("merged {:?}: {labels:?}\n", title_of[fp]));
        }
    }
    out
}

#[test]
fn pairwise_f1_on_the_sdk_corpus() {
    let corpus = corpus();
    let count = |p: &str| corpus.iter().filter(|l| l.platform == p).count();
    let labels = corpus
        .iter()
        .map(|l| l.label.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    println!(
        "{} events, {labels} bug sites (python {}, node {}, rust {})",
        corpus.len(),
        count("python"),
        count("node"),
        count("rust")
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "rule", "precision", "recall", "F1", "F1 py", "F1 node", "F1 rust"
    );
    let mut totals = Vec::new();
    for (name, rule) in RULES {
        let all = score(&corpus, None, rule);
        let per: Vec<f64> = ["python", "node", "rust"]
            .iter()
            .map(|p| score(&corpus, Some(p), rule).f1)
            .collect();
        println!(
            "{name:<28} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            all.precision, all.recall, all.f1, per[0], per[1], per[2]
        );
        totals.push(all.f1);
    }
    let (ours, bugsink, seed) = (totals[0], totals[1], totals[2]);
    let report = mistakes(&corpus);
    if !report.is_empty() {
        println!("\nwhere errorflow's grouping differs from the labels:\n{report}");
    }
    // The corpus must stay large and varied enough to mean something.
    assert!(corpus.len() >= 600, "only {} events", corpus.len());
    for p in ["python", "node", "rust"] {
        assert!(count(p) >= 150, "only {} {p} events", count(p));
    }
    assert!(labels >= 60, "only {labels} bug sites");
    assert!(
        ours >= MIN_F1,
        "errorflow's pairwise F1 {ours:.3} is below {MIN_F1}\n{report}"
    );
    assert!(ours > bugsink, "errorflow {ours:.3} ≤ bugsink {bugsink:.3}");
    assert!(ours > seed, "errorflow {ours:.3} ≤ seed {seed:.3}");
}

#[test]
fn pairwise_scores_are_right_on_a_small_case() {
    // Labels: a a a b b; keys: x x y y y.
    let events = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "y"), ("b", "y")];
    let s = pairwise(events.iter().map(|(l, k)| (*l, k.to_string())));
    // True pairs: 3 (a) + 1 (b) = 4; predicted: 1 (x) + 3 (y) = 4; both: 1 + 1 = 2.
    assert!((s.precision - 0.5).abs() < 1e-9);
    assert!((s.recall - 0.5).abs() < 1e-9);
    assert!((s.f1 - 0.5).abs() < 1e-9);
    let perfect = pairwise(events.iter().map(|(l, _)| (*l, l.to_string())));
    assert!((perfect.f1 - 1.0).abs() < 1e-9);
}
