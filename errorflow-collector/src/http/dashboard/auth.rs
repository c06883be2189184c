//! Dashboard sign-in: argon2 password hashes, server-side sessions, CSRF
//! tokens and throttling of failed sign-ins.
//!
//! A session cookie holds 32 random bytes; the store keeps only their
//! SHA-256, so a leaked database does not leak sessions. The CSRF token of a
//! session is derived from the cookie value (`SHA-256("csrf:" + value)`):
//! it needs no storage, differs from the stored hash, and an attacker who
//! cannot read the cookie cannot compute it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "ef_session";
/// Name of the cookie that carries the sign-in form's CSRF token (double submit).
pub const LOGIN_CSRF_COOKIE: &str = "ef_login_csrf";
/// How long a session lasts.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::days(7);
/// Shortest password accepted when one is set.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// An argon2id hash (PHC string) of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC string `hash`. A malformed hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a password nobody knows, verified when the user does not
/// exist so that a sign-in takes as long for unknown names as for known ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token()).expect("hashing a random password"))
}

/// A generated password for people to type: 20 characters from an alphabet without look-alikes.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks a new password; the message says what is wrong.
pub fn validate_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password too short: at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    Ok(())
}

/// Checks a user name: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "invalid user name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@'"
        ))
    }
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut buf = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// What the store keeps of a session cookie value.
pub fn session_hash(token: &str) -> String {
    hex::encode(Sha256::digest(format!("session:{token}").as_bytes()))
}

/// The CSRF token of the session whose cookie value is `token`.
pub fn csrf_token(token: &str) -> String {
    hex::encode(Sha256::digest(format!("csrf:{token}").as_bytes()))
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, path `/`, Secure over https.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Throttling of sign-ins, in memory, per user name *from one client
/// address* and per client address. Each attempt is counted as a failure
/// before its password is verified, in the same critical section as the
/// lock check ([`Throttle::begin`]), so that parallel attempts cannot all
/// pass the check before any failure is counted; a success takes its count
/// back. After `user_failures` attempts on a name from one address, or
/// `ip_failures` from one address on any names, that pair or address is
/// locked for `base_lockout`, doubling with each further lockout (capped at
/// `max_lockout`).
///
/// The per-name lock is tied to the address that failed: a stranger who
/// tries `admin` with wrong passwords locks `admin` out *from their own
/// address* only, never the real admin signing in from elsewhere. An
/// attacker with many addresses gets `user_failures` guesses per address
/// per lockout period, and every address at most `ip_failures` on all names
/// together; the argon2 verification itself is also limited to a few at a
/// time (see `DashState`).
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    pub user_failures: u32,
    pub ip_failures: u32,
    pub base_lockout: Duration,
    pub max_lockout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

const THROTTLE_MAX_KEYS: usize = 100_000;
/// A record untouched for this long is forgotten.
const THROTTLE_FORGET: Duration = Duration::from_secs(3600);

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            entries: Mutex::new(HashMap::new()),
            user_failures: 5,
            // Many people may share an address (NAT, proxies): allow more per address.
            ip_failures: 20,
            base_lockout: Duration::from_secs(30),
            max_lockout: Duration::from_secs(15 * 60),
        }
    }
}

impl Throttle {
    fn user_key(user: &str, ip: Option<IpAddr>) -> String {
        let ip = ip.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        format!("user:{}@{ip}", user.to_ascii_lowercase())
    }

    fn keys(user: &str, ip: Option<IpAddr>) -> Vec<(String, bool)> {
        let mut keys = vec![(Self::user_key(user, ip), true)];
        if let Some(ip) = ip {
            keys.push((format!("ip:{ip}"), false));
        }
        keys
    }

    /// How long the caller must still wait before trying `user` from `ip`, if locked.
    pub fn locked(&self, user: &str, ip: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Self::wait(&entries, user, ip, now)
    }

    fn wait(
        entries: &HashMap<String, Entry>,
        user: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        Self::keys(user, ip)
            .iter()
            .filter_map(|(k, _)| entries.get(k))
            .filter_map(|e| e.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Starts an attempt: refused with the time left when locked, else
    /// counted as a failure at once (taken back by [`Throttle::success`]).
    pub fn begin(&self, user: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wait) = Self::wait(&entries, user, ip, now) {
            return Err(wait);
        }
        self.count(&mut entries, user, ip, now);
        Ok(())
    }

    /// Records a failed sign-in (for callers that did not [`Throttle::begin`]).
    pub fn failure(&self, user: &str, ip: Option<IpAddr>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.count(&mut entries, user, ip, now);
    }

    fn count(
        &self,
        entries: &mut HashMap<String, Entry>,
        user: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) {
        if entries.len() >= THROTTLE_MAX_KEYS {
            entries.retain(|_, e| now.duration_since(e.last) < THROTTLE_FORGET);
        }
        for (key, is_user) in Self::keys(user, ip) {
            let limit = if is_user {
                self.user_failures
            } else {
                self.ip_failures
            };
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                lockouts: 0,
                locked_until: None,
                last: now,
            });
            if now.duration_since(e.last) >= THROTTLE_FORGET {
                *e = Entry {
                    failures: 0,
                    lockouts: 0,
                    locked_until: None,
                    last: now,
                };
            }
            e.failures += 1;
            e.last = now;
            if e.failures >= limit {
                let factor = 1u32 << e.lockouts.min(10);
                let lock = (self.base_lockout * factor).min(self.max_lockout);
                e.locked_until = Some(now + lock);
                e.lockouts += 1;
                e.failures = 0;
            }
        }
    }

    /// Takes back the failure [`Throttle::begin`] counted for an attempt
    /// whose password was never checked.
    pub fn undo(&self, user: &str, ip: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in Self::keys(user, ip) {
            if let Some(e) = entries.get_mut(&key) {
                e.failures = e.failures.saturating_sub(1);
            }
        }
    }

    /// Records a successful sign-in: the name starts afresh from this
    /// address, and the address gets its attempt back.
    pub fn success(&self, user: &str, ip: Option<IpAddr>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Self::user_key(user, ip));
        if let Some(e) = ip.and_then(|ip| entries.get_mut(&format!("ip:{ip}"))) {
            e.failures = e.failures.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn csrf_token_is_derived_from_but_differs_from_the_session() {
        let t = random_token();
        assert_eq!(csrf_token(&t), csrf_token(&t));
        assert_ne!(csrf_token(&t), session_hash(&t));
        assert_ne!(csrf_token(&t), csrf_token(&random_token()));
        assert!(constant_time_eq(&csrf_token(&t), &csrf_token(&t)));
        assert!(!constant_time_eq(&csrf_token(&t), ""));
        assert!(!constant_time_eq("abc", "abd"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; ef_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "missing"), None);
        let c = set_cookie(SESSION_COOKIE, "v", Some(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "v", None, false).contains("Secure"));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(validate_user_name("admin").is_ok());
        assert!(validate_user_name("a b").is_err());
        assert!(validate_user_name("").is_err());
        assert!(validate_password("short").is_err());
        assert!(validate_password(&generate_password()).is_ok());
    }

    #[test]
    fn throttle_locks_after_five_failures_and_grows() {
        let t = Throttle::default();
        let ip: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let start = Instant::now();
        for _ in 0..4 {
            t.failure("admin", ip, start);
        }
        assert_eq!(t.locked("admin", ip, start), None);
        t.failure("admin", ip, start);
        let wait = t.locked("Admin", ip, start).expect("locked by name");
        assert_eq!(wait, Duration::from_secs(30));
        // From another address, the name is not locked.
        let elsewhere: Option<IpAddr> = Some("10.9.9.9".parse().unwrap());
        assert_eq!(t.locked("admin", elsewhere, start), None);
        // Another user from the same address is not locked yet.
        assert_eq!(t.locked("bob", ip, start), None);
        // After the lockout, five more failures lock for twice as long.
        let later = start + Duration::from_secs(31);
        assert_eq!(t.locked("admin", ip, later), None);
        for _ in 0..5 {
            t.failure("admin", ip, later);
        }
        assert_eq!(t.locked("admin", ip, later), Some(Duration::from_secs(60)));
        t.success("admin", ip);
        assert_eq!(t.locked("admin", ip, later), None);
    }

    #[test]
    fn throttle_locks_an_address_trying_many_names() {
        let t = Throttle::default();
        let ip: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for i in 0..20 {
            t.failure(&format!("user{i}"), ip, now);
        }
        assert!(t.locked("someone-else", ip, now).is_some());
        assert!(t.locked("someone-else", None, now).is_none());
    }

    /// The check and the count are one step: of many attempts that begin
    /// before any ends, only `user_failures` get through.
    #[test]
    fn attempts_are_counted_when_they_begin() {
        let t = Throttle::default();
        let ip: Option<IpAddr> = Some("10.0.0.3".parse().unwrap());
        let now = Instant::now();
        let passed = (0..30)
            .filter(|_| t.begin("admin", ip, now).is_ok())
            .count();
        assert_eq!(passed, 5);
        t.undo("admin", ip);
        assert!(
            t.begin("admin", ip, now).is_err(),
            "a lockout is not undone"
        );
    }
}
