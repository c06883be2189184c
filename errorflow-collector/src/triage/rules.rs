//! The built-in analyst's signal table: classes of incidents, the evidence
//! that puts an incident in one, and how much each weighs. The table is
//! data (`rules.toml`, compiled in), so a user can read it and extend or
//! override it with `--triage-rules FILE`.
//!
//! ```
//! use errorflow_collector::triage::rules::RuleSet;
//! let extra = r#"
//! [[rule]]
//! id = "shop.stock_drift"
//! class = "data_integrity"
//! label = "warehouse stock drifted"
//! weight = 70
//! patterns = ['stock drift']
//! "#;
//! let rules = RuleSet::with_overrides(extra, "my-rules.toml").unwrap();
//! assert_eq!(rules.rules()[0].id, "shop.stock_drift");
//! let bad = "[[rule]]\nid = \"x\"\nclass = \"nonsense\"\nlabel = \"x\"\nweight = 1\npatterns = ['x']\n";
//! let err = RuleSet::with_overrides(bad, "bad.toml").unwrap_err();
//! assert!(err.to_string().starts_with("bad.toml:3:"), "{err}");
//! ```

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::digest::Digest;

/// The default table, compiled in.
pub const DEFAULT_RULES: &str = include_str!("rules.toml");

/// What kind of trouble an incident is; carries most of its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The service or a dependency is down for everyone (crash loop, out of
    /// memory, pool exhausted, dependency unreachable).
    Availability,
    /// Stored data is wrong: broken invariants, duplicate side effects.
    DataIntegrity,
    /// Certificates, signatures, authentication broken for everyone, attacks.
    Security,
    /// A resource is used up (full) or close to it (almost full).
    ResourceExhaustion,
    /// Slower or partial service with a fallback: timeouts, breakers, third-party limits.
    Degradation,
    /// Caller-caused or expected outcomes: aborts, 4xx, declines, scanners, deprecations.
    Expected,
    /// A bug on one code path.
    Defect,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::Availability,
        Class::DataIntegrity,
        Class::Security,
        Class::ResourceExhaustion,
        Class::Degradation,
        Class::Expected,
        Class::Defect,
    ];

    /// The name used in rule files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Availability => "availability",
            Class::DataIntegrity => "data_integrity",
            Class::Security => "security",
            Class::ResourceExhaustion => "resource_exhaustion",
            Class::Degradation => "degradation",
            Class::Expected => "expected",
            Class::Defect => "defect",
        }
    }

    /// The name shown to people.
    pub fn label(self) -> &'static str {
        match self {
            Class::Availability => "availability",
            Class::DataIntegrity => "data integrity",
            Class::Security => "security",
            Class::ResourceExhaustion => "resource exhaustion",
            Class::Degradation => "degradation",
            Class::Expected => "expected",
            Class::Defect => "code defect",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One entry of the table.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub class: Class,
    /// What the evidence means, e.g. "balance or ledger invariant violated".
    pub label: String,
    /// Priority points the class gives before the other signals (0–100).
    pub weight: i32,
    /// How far a resource is gone ("full", "almost full"), when it says.
    pub degree: Option<String>,
    pub cause: Option<String>,
    pub steps: Vec<String>,
    patterns: Option<Regex>,
    types: Option<Regex>,
    paths: Option<Regex>,
    breadcrumbs: Option<Regex>,
    status: Vec<StatusMatch>,
    levels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusMatch {
    Exact(u16),
    /// `4xx`: the hundreds digit.
    Class(u16),
}

impl StatusMatch {
    fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Exact(s) => s == status,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

/// Which rule matched and the text that matched it.
#[derive(Debug, Clone)]
pub struct Match<'a> {
    pub rule: &'a Rule,
    /// Where the evidence was found: `message`, `type`, `path`, `breadcrumb`, `status`, `level`.
    pub field: &'static str,
    /// The matched text (bounded).
    pub evidence: String,
}

/// A rule file that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.origin, self.line, self.message)
    }
}

impl std::error::Error for RulesError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    #[serde(default)]
    disabled: bool,
    class: Option<Spanned<String>>,
    label: Option<String>,
    weight: Option<Spanned<i64>>,
    degree: Option<String>,
    cause: Option<String>,
    #[serde(default)]
    steps: Vec<String>,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
    #[serde(default)]
    types: Vec<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    breadcrumbs: Vec<Spanned<String>>,
    #[serde(default)]
    status: Vec<Spanned<String>>,
    #[serde(default)]
    levels: Vec<Spanned<String>>,
}

/// What a rule file asks for, in order.
enum Entry {
    Rule(Box<Rule>),
    Disable(String),
}

/// The table the built-in analyst classifies with. First match wins.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// The compiled-in table (parsed once).
    pub fn builtin() -> Arc<RuleSet> {
        static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();
        RULES
            .get_or_init(|| {
                let entries = parse(DEFAULT_RULES, "rules.toml")
                    .unwrap_or_else(|e| panic!("the compiled-in triage rules are invalid: {e}"));
                Arc::new(RuleSet {
                    rules: entries
                        .into_iter()
                        .filter_map(|e| match e {
                            Entry::Rule(r) => Some(*r),
                            Entry::Disable(_) => None,
                        })
                        .collect(),
                })
            })
            .clone()
    }

    /// The default table with a user's file applied: an entry with a
    /// default's id replaces it in place (`disabled = true` removes it);
    /// new entries are tried before the defaults, in file order.
    pub fn with_overrides(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        let mut rules = RuleSet::builtin().rules.clone();
        let mut added = Vec::new();
        for entry in parse(text, origin)? {
            match entry {
                Entry::Disable(id) => rules.retain(|r| r.id != id),
                Entry::Rule(rule) => match rules.iter_mut().find(|r| r.id == rule.id) {
                    Some(slot) => *slot = *rule,
                    None => added.push(*rule),
                },
            }
        }
        added.extend(rules);
        Ok(RuleSet { rules: added })
    }

    /// Reads a user's rule file (see [`RuleSet::with_overrides`]).
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RulesError {
            origin: origin.clone(),
            line: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        RuleSet::with_overrides(&text, &origin)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule whose every field matches the digest's evidence.
    pub fn classify<'a>(&'a self, d: &Digest) -> Option<Match<'a>> {
        let ev = Evidence::of(d);
        self.rules.iter().find_map(|r| r.matches(&ev))
    }
}

/// The digest's evidence, as the rules read it.
struct Evidence {
    text: String,
    types: String,
    paths: Vec<String>,
    breadcrumbs: String,
    status: Option<u16>,
    level: String,
}

impl Evidence {
    fn of(d: &Digest) -> Evidence {
        let mut text = format!("{}\n{}", d.error_type, d.title);
        let mut types = d.error_type.clone();
        for e in &d.exceptions {
            text.push('\n');
            text.push_str(&e.ty);
            text.push_str(": ");
            text.push_str(&e.value);
            types.push('\n');
            types.push_str(&e.ty);
        }
        for m in &d.messages {
            text.push('\n');
            text.push_str(&m.message);
        }
        let mut paths: Vec<String> = d.affected.paths.iter().map(|t| t.value.clone()).collect();
        if let Some(route) = d.request.as_ref().and_then(|r| r.route.clone()) {
            paths.insert(0, route);
        }
        let breadcrumbs = d
            .breadcrumbs
            .iter()
            .map(|b| {
                format!(
                    "{} {}",
                    b.category.as_deref().unwrap_or(""),
                    b.message.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        Evidence {
            text,
            types,
            paths,
            breadcrumbs,
            status: d.request.as_ref().and_then(|r| r.status),
            level: d.level.clone(),
        }
    }
}

fn found(re: &Regex, hay: &str) -> Option<String> {
    re.find(hay).map(|m| super::result::bound(m.as_str(), 80))
}

impl Rule {
    fn matches(&self, ev: &Evidence) -> Option<Match<'_>> {
        // The first field that carries text is the evidence shown.
        let mut evidence: Option<(&'static str, String)> = None;
        let mut note = |field: &'static str, text: String| {
            if evidence.is_none() {
                evidence = Some((field, text));
            }
        };
        if let Some(re) = &self.patterns {
            note("message", found(re, &ev.text)?);
        }
        if let Some(re) = &self.types {
            note("type", found(re, &ev.types)?);
        }
        if let Some(re) = &self.paths {
            let hit = ev
                .paths
                .iter()
                .find_map(|p| found(re, p).map(|_| p.clone()))?;
            note("path", super::result::bound(&hit, 80));
        }
        if let Some(re) = &self.breadcrumbs {
            note("breadcrumb", found(re, &ev.breadcrumbs)?);
        }
        if !self.status.is_empty() {
            let status = ev.status?;
            if !self.status.iter().any(|s| s.matches(status)) {
                return None;
            }
            note("status", status.to_string());
        }
        if !self.levels.is_empty() {
            if !self.levels.contains(&ev.level) {
                return None;
            }
            note("level", ev.level.clone());
        }
        let (field, evidence) = evidence?;
        Some(Match {
            rule: self,
            field,
            evidence,
        })
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse(text: &str, origin: &str) -> Result<Vec<Entry>, RulesError> {
    let error = |offset: usize, message: String| RulesError {
        origin: origin.to_string(),
        line: line_of(text, offset),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        error(offset, e.message().trim().to_string())
    })?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for spanned in raw.rule {
        let at = spanned.span().start;
        let r = spanned.into_inner();
        let id = r.id.get_ref().trim().to_string();
        if id.is_empty() {
            return Err(error(r.id.span().start, "rule id is empty".into()));
        }
        if !seen.insert(id.clone()) {
            return Err(error(
                r.id.span().start,
                format!("rule id {id:?} appears twice"),
            ));
        }
        if r.disabled {
            out.push(Entry::Disable(id));
            continue;
        }
        let class_field = r
            .class
            .ok_or_else(|| error(at, format!("rule {id:?} has no class")))?;
        let class = Class::parse(class_field.get_ref().trim()).ok_or_else(|| {
            error(
                class_field.span().start,
                format!(
                    "unknown class {:?} (one of {})",
                    class_field.get_ref(),
                    Class::ALL.map(Class::as_str).join(", ")
                ),
            )
        })?;
        let weight_field = r
            .weight
            .ok_or_else(|| error(at, format!("rule {id:?} has no weight")))?;
        let weight = *weight_field.get_ref();
        if !(0..=100).contains(&weight) {
            return Err(error(
                weight_field.span().start,
                format!("weight {weight} out of range 0..=100"),
            ));
        }
        let label = r
            .label
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .ok_or_else(|| error(at, format!("rule {id:?} has no label")))?;
        let regex = |pats: &[Spanned<String>]| -> Result<Option<Regex>, RulesError> {
            if pats.is_empty() {
                return Ok(None);
            }
            for p in pats {
                build_regex(p.get_ref()).map_err(|e| {
                    error(
                        p.span().start,
                        format!("invalid pattern {:?}: {e}", p.get_ref()),
                    )
                })?;
            }
            let joined = pats
                .iter()
                .map(|p| format!("(?:{})", p.get_ref()))
                .collect::<Vec<_>>()
                .join("|");
            build_regex(&joined)
                .map(Some)
                .map_err(|e| error(at, format!("rule {id:?}: patterns too large together: {e}")))
        };
        let mut status = Vec::new();
        for s in &r.status {
            let v = s.get_ref().trim().to_ascii_lowercase();
            let parsed = match v.strip_suffix("xx") {
                Some(d) => d
                    .parse::<u16>()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .map(StatusMatch::Class),
                None => v
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusMatch::Exact),
            };
            status.push(parsed.ok_or_else(|| {
                error(
                    s.span().start,
                    format!(
                        "invalid status {:?} (a code like \"404\" or a class like \"4xx\")",
                        s.get_ref()
                    ),
                )
            })?);
        }
        let mut levels = Vec::new();
        for l in &r.levels {
            let v = l.get_ref().trim().to_ascii_lowercase();
            if !["fatal", "error", "warning", "info", "debug"].contains(&v.as_str()) {
                return Err(error(
                    l.span().start,
                    format!(
                        "unknown level {:?} (fatal, error, warning, info or debug)",
                        l.get_ref()
                    ),
                ));
            }
            levels.push(v);
        }
        let rule = Rule {
            patterns: regex(&r.patterns)?,
            types: regex(&r.types)?,
            paths: regex(&r.paths)?,
            breadcrumbs: regex(&r.breadcrumbs)?,
            id: id.clone(),
            class,
            label,
            weight: weight as i32,
            degree: r
                .degree
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty()),
            cause: r
                .cause
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
            steps: r.steps,
            status,
            levels,
        };
        if rule.patterns.is_none()
            && rule.types.is_none()
            && rule.paths.is_none()
            && rule.breadcrumbs.is_none()
            && rule.status.is_empty()
            && rule.levels.is_empty()
        {
            return Err(error(
                at,
                format!("rule {id:?} matches nothing: give patterns, types, paths, breadcrumbs, status or levels"),
            ));
        }
        out.push(Entry::Rule(Box::new(rule)));
    }
    Ok(out)
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(4 << 20)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_parses_and_ids_are_unique() {
        let rules = RuleSet::builtin();
        assert!(rules.rules().len() > 30);
        for class in Class::ALL {
            assert!(
                rules.rules().iter().any(|r| r.class == class),
                "no rule for {class:?}"
            );
        }
    }

    #[test]
    fn overrides_replace_in_place_and_new_rules_come_first() {
        let text = r#"
[[rule]]
id = "expected.deprecation"
class = "defect"
label = "deprecations are bugs here"
weight = 50
patterns = ['deprecated']

[[rule]]
id = "expected.scanner"
disabled = true

[[rule]]
id = "mine"
class = "availability"
label = "mine"
weight = 60
status = ["5xx"]
"#;
        let set = RuleSet::with_overrides(text, "x.toml").unwrap();
        let default = RuleSet::builtin();
        assert_eq!(set.rules()[0].id, "mine");
        assert!(!set.rules().iter().any(|r| r.id == "expected.scanner"));
        let pos = |s: &RuleSet, id: &str| s.rules().iter().position(|r| r.id == id).unwrap();
        let dep = &set.rules()[pos(&set, "expected.deprecation")];
        assert_eq!(dep.class, Class::Defect);
        // In place: the same neighbours as in the default table.
        assert_eq!(
            set.rules()[pos(&set, "expected.deprecation") + 1].id,
            default.rules()[pos(&default, "expected.deprecation") + 1].id
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            ("[[rule]]\nid = \"a\"\nclass = \"availability\"\nlabel = \"a\"\nweight = 5\npatterns = ['(unclosed']\n", 6, "invalid pattern"),
            ("[[rule]]\nid = \"a\"\nclass = \"availability\"\nlabel = \"a\"\nweight = 500\npatterns = ['x']\n", 5, "out of range"),
            ("\n\n[[rule]]\nid = \"a\"\nclass = \"availability\"\nlabel = \"a\"\nweight = 5\n", 3, "matches nothing"),
            ("[[rule]]\nid = \"a\"\nclass = \"availability\"\nlabel = \"a\"\nweight = 5\nstatus = [\"4x\"]\n", 6, "invalid status"),
            ("[[rule]]\nid = \"a\"\nclass = \"availability\"\nlabel = \"a\"\nweight = 5\nmystery = 1\n", 6, "unknown field"),
            ("[[rule]]\nid = \"a\"\nclass = \"availability\"\nlabel = \"a\"\nweight = \"heavy\"\n", 5, "invalid type"),
            ("[[rule\n", 1, ""),
        ];
        for (text, line, needle) in cases {
            let e = RuleSet::with_overrides(text, "r.toml").unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(needle), "{e}");
            assert!(
                e.to_string().starts_with(&format!("r.toml:{line}: ")),
                "{e}"
            );
        }
    }
}
