//! Release order, for incidents resolved "in the next release".
//!
//! Such an incident remembers the release that was current when it was
//! resolved. Events from that release or an older one (a canary, a lagging
//! host still running the old build) are expected and must not reopen it;
//! only an event from a newer release is a regression. "Newer" is semantic
//! version order when both releases parse as versions of the same package,
//! and otherwise the order in which the project first saw them. Pure: the
//! store passes in the first sightings it read from the `releases` table.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

/// Whether a new event with `release` regresses a RESOLVED incident whose
/// `resolved_in_release` is `resolved_in`.
///
/// A plain resolution (no release) is regressed by every event. An event
/// without a release cannot be placed in the order, so it regresses too:
/// missing a regression is worse than a false alarm.
pub(crate) fn regresses(
    resolved_in: Option<&str>,
    release: Option<&str>,
    first_seen: impl Fn(&str) -> Option<DateTime<Utc>>,
) -> bool {
    match (resolved_in, release) {
        (Some(resolved_in), Some(release)) => is_newer(release, resolved_in, first_seen),
        _ => true,
    }
}

/// Whether `release` comes after `than`: by semantic version when both are
/// versions of one package ([`semver_order`]), otherwise by the project's first sighting of
/// each. When a sighting is unknown or both were first seen at the same
/// instant, the order cannot be told and `release` counts as newer.
pub(crate) fn is_newer(
    release: &str,
    than: &str,
    first_seen: impl Fn(&str) -> Option<DateTime<Utc>>,
) -> bool {
    if release == than {
        return false;
    }
    if let Some(order) = semver_order(release, than) {
        return order == Ordering::Greater;
    }
    match (first_seen(release), first_seen(than)) {
        (Some(a), Some(b)) => a >= b,
        _ => true,
    }
}

/// The semantic-version order of two releases, when both parse as versions
/// of the same package. `1.2`, `v1.2.0` and `1.2.0+build.7` are equal: the
/// same version, whose events do not regress one another.
pub(crate) fn semver_order(a: &str, b: &str) -> Option<Ordering> {
    let (package_a, version_a) = parse(a)?;
    let (package_b, version_b) = parse(b)?;
    (package_a == package_b).then(|| version_a.cmp_precedence(&version_b))
}

/// Splits a release into its package prefix (`name` of Sentry's
/// `name@1.2.3`, empty when there is none) and its version, accepting a `v`
/// prefix and padding `1` and `1.2` (or `1.2-rc.1`) to `1.0.0` and `1.2.0`.
fn parse(release: &str) -> Option<(&str, semver::Version)> {
    let (package, version) = match release.rsplit_once('@') {
        Some((package, version)) if !package.is_empty() => (package, version),
        Some(_) => return None,
        None => ("", release),
    };
    let version = version.strip_prefix(['v', 'V']).unwrap_or(version).trim();
    if let Ok(v) = semver::Version::parse(version) {
        return Some((package, v));
    }
    let core_end = version.find(['-', '+']).unwrap_or(version.len());
    let (core, rest) = version.split_at(core_end);
    let parts = core.split('.').count();
    let numeric = core
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    // A lone number followed by `-…` is more likely a date (`2024-05-01`)
    // or a build tag than a pre-release.
    if !numeric || parts >= 3 || (parts == 1 && rest.starts_with('-')) {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    semver::Version::parse(&padded).ok().map(|v| (package, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn never(_: &str) -> Option<DateTime<Utc>> {
        None
    }

    #[test]
    fn semver_forms_are_understood() {
        assert_eq!(semver_order("1.2.3", "1.2.4"), Some(Ordering::Less));
        assert_eq!(semver_order("v1.10.0", "1.9.9"), Some(Ordering::Greater));
        assert_eq!(semver_order("V2", "1.99"), Some(Ordering::Greater));
        assert_eq!(semver_order("1.2", "1.2.1"), Some(Ordering::Less));
        assert_eq!(semver_order("1.2", "v1.2.0"), Some(Ordering::Equal));
        assert_eq!(
            semver_order("1.2.0-rc.1", "1.2.0"),
            Some(Ordering::Less),
            "a pre-release comes before its release"
        );
        assert_eq!(semver_order("1.2-rc.1", "1.1.0"), Some(Ordering::Greater));
        assert_eq!(
            semver_order("1.0.0+abc", "1.0.0+def"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            semver_order("my-app@1.2.3", "my-app@v1.3.0"),
            Some(Ordering::Less)
        );
        assert_eq!(
            semver_order("@scope/pkg@2.0.0", "@scope/pkg@1.0.0"),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn different_packages_and_non_versions_are_not_compared_by_semver() {
        assert_eq!(semver_order("api@1.2.3", "web@1.2.4"), None);
        assert_eq!(semver_order("api@1.2.3", "1.2.4"), None);
        assert_eq!(semver_order("deadbeef", "1.2.4"), None);
        assert_eq!(semver_order("2024-05-01", "2024-06-01"), None);
        assert_eq!(semver_order("1.2.3.4", "1.2.3.5"), None);
        assert_eq!(semver_order("@1.2.3", "1.2.4"), None);
        assert_eq!(semver_order("app@", "app@1.0.0"), None);
    }

    #[test]
    fn only_newer_releases_regress() {
        assert!(!regresses(Some("1.2.0"), Some("1.2.0"), never));
        assert!(!regresses(Some("1.2.0"), Some("1.1.9"), never));
        assert!(!regresses(Some("1.2.0"), Some("v1.2"), never));
        assert!(!regresses(
            Some("1.2.0+build.1"),
            Some("1.2.0+build.2"),
            never
        ));
        assert!(!regresses(
            Some("app@1.2.0"),
            Some("app@v1.2.0-beta.1"),
            never
        ));
        assert!(regresses(Some("1.2.0"), Some("1.2.1"), never));
        assert!(regresses(Some("app@1.2"), Some("app@1.3"), never));
    }

    #[test]
    fn events_without_a_release_and_plain_resolutions_regress() {
        assert!(regresses(Some("1.2.0"), None, never));
        assert!(regresses(None, Some("1.2.0"), never));
        assert!(regresses(None, None, never));
    }

    #[test]
    fn other_releases_are_ordered_by_first_sighting() {
        let at = |h: u32| Some(Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap());
        let seen = |r: &str| match r {
            "abc123" => at(1),
            "def456" => at(2),
            "api@1.0.0" => at(3),
            "twin-a" | "twin-b" => at(4),
            _ => None,
        };
        assert!(!regresses(Some("def456"), Some("abc123"), seen));
        assert!(regresses(Some("abc123"), Some("def456"), seen));
        // Not the same package: first sightings decide, not the versions.
        assert!(!regresses(Some("api@1.0.0"), Some("def456"), seen));
        // Unknown or simultaneous sightings cannot be ordered: regress.
        assert!(regresses(Some("abc123"), Some("never-seen"), seen));
        assert!(regresses(Some("never-seen"), Some("abc123"), seen));
        assert!(regresses(Some("twin-a"), Some("twin-b"), seen));
    }
}
