//! NUL bytes in management and sign-in input.
//!
//! Postgres cannot store U+0000 in `text` (SQLite can), so a NUL that
//! reaches a statement's text parameter fails it: a 500 on one backend and
//! not the other. Management and sign-in input is therefore refused at the
//! edge with a 4xx naming the parameter, before any handler runs: the URI
//! (path and query) by [`refuse_nul_in_uri`], for every route; JSON bodies
//! by the API's JSON extractors ([`nul_in_json`]); dashboard forms by the
//! form reader ([`nul_in_form`]). Ingest strips NULs from events instead
//! (`pipeline::normalize`), since an event is kept rather than refused.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// `%00`, the only way a NUL enters a URI (a raw one is not valid there).
fn has_encoded_nul(s: &str) -> bool {
    s.contains("%00")
}

/// The query parameter (or `path`) whose decoded text holds a NUL.
fn nul_in_uri(uri: &axum::http::Uri) -> Option<ApiError> {
    if has_encoded_nul(uri.path()) {
        return Some(ApiError::bad_request(
            "invalid_path",
            "the path contains a NUL byte (%00), which is not allowed",
        ));
    }
    let query = uri.query().filter(|q| has_encoded_nul(q))?;
    let name = form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| k.replace('\0', "\\0"))?;
    Some(ApiError::bad_request(
        "invalid_query",
        format!("query parameter {name:?} contains a NUL byte, which is not allowed"),
    ))
}

/// Refuses a request whose path or query holds a NUL with 400 and a JSON
/// error naming the parameter. It costs a substring search per request.
pub async fn refuse_nul_in_uri(req: Request, next: Next) -> Response {
    match nul_in_uri(req.uri()) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

/// The JSON path (`reason`, `next_steps[2]`) of the first string or key in
/// `body` that holds a NUL; `None` when there is none or `body` is not
/// JSON (the JSON extractor then says what is wrong with it). A NUL can only
/// be written `\u0000` in JSON, so bodies without that escape are not parsed
/// a second time.
pub fn nul_in_json(body: &[u8]) -> Option<String> {
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut path = String::new();
    find_nul(&value, &mut path).then_some(path)
}

fn find_nul(value: &serde_json::Value, path: &mut String) -> bool {
    use serde_json::Value;
    let len = path.len();
    let found = match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            path.truncate(len);
            path.push_str(&format!("[{i}]"));
            find_nul(v, path)
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            path.truncate(len);
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&k.replace('\0', "\\0"));
            k.contains('\0') || find_nul(v, path)
        }),
        _ => false,
    };
    if !found {
        path.truncate(len);
    }
    found
}

/// The error for a JSON body whose field `path` holds a NUL.
pub fn json_nul_error(path: &str) -> ApiError {
    let field = if path.is_empty() { "body" } else { path };
    ApiError::unprocessable(
        "invalid_field",
        format!("field {field:?} contains a NUL byte, which is not allowed"),
    )
}

/// The name of the first form field whose name or value holds a NUL.
pub fn nul_in_form(fields: &[(String, String)]) -> Option<String> {
    fields
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| k.replace('\0', "\\0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_name_the_field() {
        assert_eq!(
            nul_in_json(br#"{"reason": "a\u0000b"}"#).as_deref(),
            Some("reason")
        );
        assert_eq!(
            nul_in_json(br#"{"a": {"b": ["x", "\u0000"]}}"#).as_deref(),
            Some("a.b[1]")
        );
        assert_eq!(nul_in_json(br#""\u0000""#).as_deref(), Some(""));
        // An escaped backslash followed by `u0000` is text, not a NUL.
        assert_eq!(nul_in_json(br#"{"reason": "\\u0000"}"#), None);
        assert_eq!(nul_in_json(br#"{"reason": "fine"}"#), None);
        assert_eq!(nul_in_json(b"{not json \\u0000"), None);
    }

    #[test]
    fn uris_name_the_parameter() {
        let uri: axum::http::Uri = "/api/v1/groups?status=open&q=a%00b".parse().unwrap();
        let e = nul_in_uri(&uri).unwrap();
        assert_eq!(e.code, "invalid_query");
        assert!(e.message.contains("\"q\""), "{}", e.message);
        let uri: axum::http::Uri = "/groups/a%00b/summarize".parse().unwrap();
        assert_eq!(nul_in_uri(&uri).unwrap().code, "invalid_path");
        let uri: axum::http::Uri = "/api/v1/groups?q=100%25".parse().unwrap();
        assert!(nul_in_uri(&uri).is_none());
    }
}
