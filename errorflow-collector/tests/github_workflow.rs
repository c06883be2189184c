//! The shipped GitHub Actions workflow (`infra/github/errorflow-rca.yml`):
//! actionlint finds nothing in it, and it keeps the rules that make it
//! safe to run on comments: triggered by `issue_comment` only, maintainers
//! checked in the job's condition before any step, `contents: read` and
//! `issues: write` and nothing more, actions pinned by full commit SHA, no
//! `pull_request_target`, and no `${{ }}` inside a `run:` script (issue
//! and comment text reach steps only through the environment).

use std::path::PathBuf;

use serde_yaml::Value;

fn workflow_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/github/errorflow-rca.yml")
}

fn workflow() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(workflow_path()).unwrap()).unwrap()
}

#[test]
fn actionlint_finds_nothing() {
    let venv = std::env::var("ERRORFLOW_TEST_VENV").unwrap_or_else(|_| {
        panic!(
            "ERRORFLOW_TEST_VENV is not set: run ./scripts/test.sh, or \
             python3 -m venv target/test-venv && target/test-venv/bin/pip install -r scripts/test-requirements.txt \
             && export ERRORFLOW_TEST_VENV=$PWD/target/test-venv"
        )
    });
    let bin = PathBuf::from(venv).join("bin/actionlint");
    assert!(
        bin.is_file(),
        "{} is missing: $ERRORFLOW_TEST_VENV/bin/pip install -r scripts/test-requirements.txt",
        bin.display()
    );
    let out = std::process::Command::new(&bin)
        .arg("-no-color")
        .arg(workflow_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runs_on_issue_comments_only() {
    let w = workflow();
    let on = w["on"].as_mapping().expect("`on` is a mapping");
    let triggers: Vec<&str> = on.keys().filter_map(Value::as_str).collect();
    assert_eq!(triggers, ["issue_comment"]);
    let text = std::fs::read_to_string(workflow_path()).unwrap();
    assert!(!text.contains("pull_request_target"));
}

#[test]
fn permissions_are_read_contents_and_write_issues_only() {
    let w = workflow();
    let expected: Value = serde_yaml::from_str("{contents: read, issues: write}").unwrap();
    assert_eq!(w["permissions"], expected);
    for (name, job) in w["jobs"].as_mapping().unwrap() {
        let p = &job["permissions"];
        assert!(
            p.is_null() || *p == expected,
            "job {name:?} widens the permissions: {p:?}"
        );
    }
}

#[test]
fn maintainers_are_checked_before_any_step() {
    let w = workflow();
    for (name, job) in w["jobs"].as_mapping().unwrap() {
        let cond = job["if"]
            .as_str()
            .unwrap_or_else(|| panic!("job {name:?} has no `if`"));
        assert!(
            cond.contains("github.event.comment.author_association"),
            "{cond}"
        );
        for assoc in ["OWNER", "MEMBER", "COLLABORATOR"] {
            assert!(cond.contains(assoc), "{cond}");
        }
        for other in ["CONTRIBUTOR", "NONE", "FIRST_TIME"] {
            assert!(!cond.contains(other), "{cond}");
        }
        assert!(cond.contains("startsWith(github.event.comment.body, '/errorflow rca')"));
    }
}

#[test]
fn actions_are_pinned_and_no_script_interpolates_expressions() {
    let w = workflow();
    let mut uses_seen = 0;
    for (_, job) in w["jobs"].as_mapping().unwrap() {
        for step in job["steps"].as_sequence().unwrap() {
            if let Some(uses) = step["uses"].as_str() {
                uses_seen += 1;
                let (_, rev) = uses.split_once('@').expect("uses without a revision");
                assert!(
                    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{uses} is not pinned by a full commit SHA"
                );
                if uses.starts_with("actions/checkout@") {
                    assert_eq!(step["with"]["persist-credentials"], Value::Bool(false));
                }
            }
            if let Some(run) = step["run"].as_str() {
                assert!(
                    !run.contains("${{"),
                    "a run script interpolates an expression: {run}"
                );
            }
        }
    }
    assert!(uses_seen > 0);
}
