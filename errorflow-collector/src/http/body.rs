//! Reading request bodies: the size limit on the bytes as sent, and bounded
//! decompression of every `Content-Encoding` the collector accepts.
//!
//! This is the one implementation of both for every ingest endpoint (ours
//! and Sentry's), so a compression bomb is refused the same way everywhere:
//! decoders are read through `take(max + 1)`, so at most `max + 1` bytes are
//! ever inflated, whatever the ratio.

use std::cell::RefCell;
use std::io::{Cursor, Read};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use flate2::bufread::GzDecoder;

use super::ApiError;
use crate::telemetry;

/// The encodings [`decompress`] undoes, for error messages.
pub const SUPPORTED_ENCODINGS: &str = "gzip, deflate, br, zstd or none";

/// zstd frames may ask for a window of up to 2 GiB; no body we accept needs
/// more than 32 MiB, so a frame asking for more is refused before allocating.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// Reads the body, refusing more than `max` bytes (413) — early when the
/// declared `Content-Length` already says so, otherwise while reading, which
/// also bounds chunked bodies.
pub async fn read_limited(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        telemetry::rejected("too_large", 1);
        ApiError::too_large(format!("request body exceeds {max} bytes"))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large()
        } else if super::server::is_body_timeout(&e) {
            telemetry::rejected("timeout", 1);
            ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("cannot read request body: {e}"),
            )
        } else {
            ApiError::bad_request("invalid_body", format!("cannot read request body: {e}"))
        }
    })
}

/// What [`decompress_within`] inflated of a body: all of it, or only the
/// first `budget` bytes of a body that inflates to more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflated {
    Whole(Bytes),
    Prefix(Bytes),
}

/// The result of a bounded decoder: every byte, or the first `max + 1`.
enum Out {
    Whole(Vec<u8>),
    Over(Vec<u8>),
}

impl Out {
    fn of(out: Vec<u8>, max: usize) -> Out {
        if out.len() > max {
            Out::Over(out)
        } else {
            Out::Whole(out)
        }
    }
}

/// Undoes the request's `Content-Encoding` (gzip, deflate, br, zstd or
/// none), never producing more than `max` bytes: a larger result is refused
/// with 413 after inflating at most `max + 1` bytes; a corrupt body is 400,
/// an unknown encoding 415.
pub fn decompress(headers: &HeaderMap, body: &Bytes, max: usize) -> Result<Bytes, ApiError> {
    match decompress_within(headers, body, max)? {
        Inflated::Whole(data) => Ok(data),
        Inflated::Prefix(_) => Err(inflated_too_large(max)),
    }
}

/// Undoes the request's `Content-Encoding` as [`decompress`] does, but
/// inflates at most `budget + 1` bytes and returns the first `budget` of a
/// body that inflates to more instead of refusing it. Handlers call it
/// on the async worker with a small budget: a body that fits is decoded
/// there, any other one is inflated again off the async workers, and its
/// prefix already holds the envelope header, so that a key sent only in
/// there is checked before the whole body is inflated.
pub fn decompress_within(
    headers: &HeaderMap,
    body: &Bytes,
    budget: usize,
) -> Result<Inflated, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let data = &body[..];
    let decoded = match encoding.as_str() {
        "" | "identity" => {
            return Ok(if body.len() > budget {
                Inflated::Prefix(body.slice(..budget))
            } else {
                Inflated::Whole(body.clone())
            });
        }
        "gzip" | "x-gzip" => gunzip(body, budget),
        // The `bufread` decoders read the body in place; the `read` ones
        // would first copy it through a zeroed 32 KiB buffer of their own,
        // allocated for every request. HTTP's `deflate` is zlib-wrapped, but
        // some clients send raw deflate: a zlib stream starts with a CMF byte
        // of 0x?8 whose header checksums.
        "deflate" if is_zlib_header(data) => inflate(
            flate2::bufread::ZlibDecoder::new(data),
            "deflate",
            budget,
            data.len(),
        ),
        "deflate" => inflate(
            flate2::bufread::DeflateDecoder::new(data),
            "deflate",
            budget,
            data.len(),
        ),
        "br" => inflate(
            brotli::Decompressor::new(data, 4096),
            "brotli",
            budget,
            data.len(),
        ),
        "zstd" => match zstd::stream::read::Decoder::with_buffer(data) {
            Ok(mut decoder) => match decoder.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                Ok(()) => inflate(decoder, "zstd", budget, data.len()),
                Err(e) => Err(ApiError::bad_request(
                    "invalid_encoding",
                    format!("invalid zstd body: {e}"),
                )),
            },
            Err(e) => Err(ApiError::bad_request(
                "invalid_encoding",
                format!("invalid zstd body: {e}"),
            )),
        },
        other => {
            telemetry::rejected("unsupported_media_type", 1);
            return Err(ApiError::unsupported_media(format!(
                "unsupported content-encoding {other:?} (use {SUPPORTED_ENCODINGS})"
            )));
        }
    };
    match decoded {
        Ok(out) => Ok(inflated(out, budget)),
        Err(e) => {
            telemetry::rejected("invalid_encoding", 1);
            Err(e)
        }
    }
}

fn inflated(out: Out, budget: usize) -> Inflated {
    match out {
        Out::Whole(data) => Inflated::Whole(data.into()),
        Out::Over(mut data) => {
            data.truncate(budget);
            Inflated::Prefix(data.into())
        }
    }
}

/// Whether a body without `Content-Encoding` is in the legacy form of
/// Sentry's store endpoint: base64 of zlib-deflated JSON, as old SDKs
/// (raven-python, raven-node, …) sent it. Such a body starts with `eJ` (a
/// zlib header `78 9c` in base64) or with another zlib header in base64;
/// JSON never does.
pub fn is_legacy_store_body(data: &[u8]) -> bool {
    use base64::Engine as _;
    if data.starts_with(b"eJ") {
        return true;
    }
    data.get(..4)
        .and_then(|head| base64::engine::general_purpose::STANDARD.decode(head).ok())
        .is_some_and(|head| is_zlib_header(&head))
}

/// Decodes a legacy store body (base64 of zlib-deflated JSON) with the
/// same bound as [`decompress`]: never more than `max` bytes inflated
/// (413 beyond), 400 for invalid base64 or zlib.
pub fn decode_legacy_store_body(data: &[u8], max: usize) -> Result<Bytes, ApiError> {
    match decode_legacy_store_body_within(data, max)? {
        Inflated::Whole(data) => Ok(data),
        Inflated::Prefix(_) => Err(inflated_too_large(max)),
    }
}

/// [`decode_legacy_store_body`] with a budget, as [`decompress_within`].
pub fn decode_legacy_store_body_within(data: &[u8], budget: usize) -> Result<Inflated, ApiError> {
    use base64::Engine as _;
    // Some clients end the body with a newline; base64 itself has no blanks.
    let text = data.trim_ascii();
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| {
            telemetry::rejected("invalid_encoding", 1);
            ApiError::bad_request(
                "invalid_encoding",
                format!("invalid base64 body (legacy store format): {e}"),
            )
        })?;
    match inflate(
        flate2::bufread::ZlibDecoder::new(&compressed[..]),
        "zlib",
        budget,
        compressed.len(),
    ) {
        Ok(out) => Ok(inflated(out, budget)),
        Err(e) => {
            telemetry::rejected("invalid_encoding", 1);
            Err(e)
        }
    }
}

fn is_zlib_header(data: &[u8]) -> bool {
    data.len() >= 2
        && data[0] & 0x0f == 8
        && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0
}

thread_local! {
    /// Each thread's gzip decoder, reset for every body. Setting one up per
    /// request (zeroing its inflate state and window) was about 5 % of the
    /// instructions spent decoding a gzip Sentry envelope.
    static GZIP: RefCell<Option<GzDecoder<Cursor<Bytes>>>> = const { RefCell::new(None) };
}

/// Inflates a gzip body of one or more members (RFC 1952 allows several, one
/// after the other), as `flate2`'s `MultiGzDecoder` does, but with the
/// thread's decoder: `MultiGzDecoder` cannot be reset for a new body.
fn gunzip(body: &Bytes, max: usize) -> Result<Out, ApiError> {
    GZIP.with(|slot| {
        // Nothing in here can reach `gunzip` again, so the cell is free.
        let mut slot = slot.borrow_mut();
        let mut out = Vec::with_capacity(gzip_size_hint(body).min(max));
        let mut input = Cursor::new(body.clone());
        loop {
            let decoder = match slot.as_mut() {
                Some(decoder) => {
                    decoder.reset(input);
                    decoder
                }
                None => slot.insert(GzDecoder::new(input)),
            };
            // A member ends with its trailer, which the decoder checks
            // (CRC-32 and length) before it reports the end.
            let read = read_bounded(&mut *decoder, &mut out, max);
            // Take the body back, up to the end of this member, and leave no
            // request's bytes in the thread's decoder.
            input = decoder.reset(Cursor::new(Bytes::new()));
            read.map_err(|e| invalid_body("gzip", &e))?;
            if out.len() > max || input.position() >= body.len() as u64 {
                return Ok(Out::of(out, max));
            }
        }
    })
}

/// How large a gzip body will be once inflated: what its trailer says
/// (ISIZE: the last member's size modulo 2^32, never more than deflate can
/// expand its bytes, 1,032 to 1) or the guess for a body without a declared
/// size, whichever is larger. Only a first capacity for the buffer: a body
/// that lies gets a buffer that grows or is too large, and is still read
/// through the limit.
fn gzip_size_hint(data: &[u8]) -> usize {
    let declared = data
        .last_chunk::<4>()
        .map_or(0, |isize| u32::from_le_bytes(*isize) as usize)
        .min(data.len().saturating_mul(1032));
    declared.max(data.len())
}

/// A first guess for the inflated size of `compressed` bytes without a
/// declared size: JSON compresses about four to one.
fn deflate_size_hint(compressed: usize) -> usize {
    compressed.saturating_mul(4)
}

/// Reads `reader` to its end into `out`, but never past `max` bytes in all:
/// one byte more than `max` is read to tell a body at the limit from a
/// larger one.
fn read_bounded(reader: impl Read, out: &mut Vec<u8>, max: usize) -> std::io::Result<()> {
    let room = (max + 1).saturating_sub(out.len()) as u64;
    reader.take(room).read_to_end(out).map(drop)
}

fn invalid_body(name: &str, e: &std::io::Error) -> ApiError {
    // The gzip endpoint's historical code; the others say what they are.
    let code = if name == "gzip" {
        "invalid_gzip"
    } else {
        "invalid_encoding"
    };
    ApiError::bad_request(code, format!("invalid {name} body: {e}"))
}

fn inflated_too_large(max: usize) -> ApiError {
    telemetry::rejected("too_large", 1);
    ApiError::too_large(format!("decompressed body exceeds {max} bytes"))
}

/// Reads `reader`, which inflates `compressed` bytes, to its end, but never
/// more than `max + 1` decompressed bytes.
fn inflate(reader: impl Read, name: &str, max: usize, compressed: usize) -> Result<Out, ApiError> {
    let mut out = Vec::with_capacity(deflate_size_hint(compressed).min(max));
    read_bounded(reader, &mut out, max).map_err(|e| invalid_body(name, &e))?;
    Ok(Out::of(out, max))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;

    use super::*;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap(),
        );
        h
    }

    fn encode(encoding: &str, data: &[u8]) -> Vec<u8> {
        match encoding {
            "gzip" => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "raw-deflate" => {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            _ => data.to_vec(),
        }
    }

    #[test]
    fn every_encoding_round_trips() {
        let data = b"{\"hello\": \"world\"}\n".repeat(100);
        for (encoding, header) in [
            ("gzip", "gzip"),
            ("deflate", "deflate"),
            ("raw-deflate", "deflate"),
            ("br", "br"),
            ("zstd", "zstd"),
            ("identity", "identity"),
        ] {
            let body = Bytes::from(encode(encoding, &data));
            let out = decompress(&headers(header), &body, 1 << 20)
                .unwrap_or_else(|e| panic!("{encoding}: {e:?}"));
            assert_eq!(&out[..], &data[..], "{encoding}");
        }
    }

    #[test]
    fn bombs_are_refused_for_every_encoding() {
        let data = vec![b'a'; 4 << 20];
        for encoding in ["gzip", "deflate", "br", "zstd"] {
            let body = Bytes::from(encode(encoding, &data));
            assert!(body.len() < 64 << 10, "{encoding} compresses well");
            let err = decompress(&headers(encoding), &body, 1 << 20).unwrap_err();
            assert_eq!(err.status, 413, "{encoding}");
        }
    }

    /// Within a budget, a body that inflates to more gives its first
    /// `budget` bytes, whatever the encoding; a smaller one all of them.
    #[test]
    fn a_budget_gives_the_start_of_a_larger_body() {
        let mut data = b"{\"dsn\": \"x\"}\n".to_vec();
        data.resize(4 << 20, b'a');
        for encoding in ["gzip", "deflate", "br", "zstd", "identity"] {
            let body = Bytes::from(encode(encoding, &data));
            let out = decompress_within(&headers(encoding), &body, 1000).unwrap();
            assert_eq!(
                out,
                Inflated::Prefix(Bytes::copy_from_slice(&data[..1000])),
                "{encoding}"
            );
            let out = decompress_within(&headers(encoding), &body, 4 << 20).unwrap();
            assert_eq!(
                out,
                Inflated::Whole(Bytes::from(data.clone())),
                "{encoding}"
            );
        }
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_client_errors() {
        let garbage = Bytes::from_static(b"definitely not compressed");
        for encoding in ["gzip", "deflate", "br", "zstd"] {
            let err = decompress(&headers(encoding), &garbage, 1 << 20).unwrap_err();
            assert_eq!(err.status, 400, "{encoding}: {}", err.message);
        }
        let err = decompress(&headers("compress"), &garbage, 1 << 20).unwrap_err();
        assert_eq!(err.status, 415);
    }

    #[test]
    fn legacy_store_bodies() {
        use base64::Engine as _;
        let json = b"{\"message\": \"hello\"}";
        let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
        let body = b64(&encode("deflate", json));
        assert!(body.starts_with("eJ"));
        assert!(is_legacy_store_body(body.as_bytes()));
        let out = decode_legacy_store_body(format!("{body}\n").as_bytes(), 1 << 20).unwrap();
        assert_eq!(&out[..], json);
        // Other zlib levels start differently in base64 (`78 01` → `eAE`).
        let mut fast = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::none());
        fast.write_all(json).unwrap();
        let fast = b64(&fast.finish().unwrap());
        assert!(!fast.starts_with("eJ"));
        assert!(is_legacy_store_body(fast.as_bytes()));
        assert_eq!(
            &decode_legacy_store_body(fast.as_bytes(), 1 << 20).unwrap()[..],
            json
        );
        // JSON is never taken for it.
        assert!(!is_legacy_store_body(b"{\"a\": 1}"));
        assert!(!is_legacy_store_body(b"  {}"));
        // Invalid base64, invalid zlib and bombs.
        assert_eq!(
            decode_legacy_store_body(b"eJ!!not base64", 1 << 20)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            decode_legacy_store_body(b64(b"not zlib").as_bytes(), 1 << 20)
                .unwrap_err()
                .status,
            400
        );
        let bomb = b64(&encode("deflate", &vec![b'a'; 4 << 20]));
        assert_eq!(
            decode_legacy_store_body(bomb.as_bytes(), 1 << 20)
                .unwrap_err()
                .status,
            413
        );
    }

    /// Every gzip body goes through the thread's one decoder, reset in
    /// between: members follow each other, a bad body leaves nothing behind
    /// for the next one, and the limit counts all members together.
    #[test]
    fn gzip_members_and_the_reused_decoder() {
        let gzip = headers("gzip");
        let first = b"{\"first\": 1}\n".repeat(50);
        let second = b"{\"second\": 2}\n".repeat(70);
        let mut two = encode("gzip", &first);
        two.extend(encode("gzip", &second));
        let out = decompress(&gzip, &Bytes::from(two.clone()), 1 << 20).unwrap();
        assert_eq!(out, [first.clone(), second.clone()].concat());

        // A corrupt body, then a truncated one, then a good one.
        let mut corrupt = encode("gzip", &first);
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        assert_eq!(
            decompress(&gzip, &Bytes::from(corrupt), 1 << 20)
                .unwrap_err()
                .status,
            400
        );
        let whole = encode("gzip", &second);
        let cut = Bytes::copy_from_slice(&whole[..whole.len() - 5]);
        assert_eq!(decompress(&gzip, &cut, 1 << 20).unwrap_err().status, 400);
        assert_eq!(
            decompress(&gzip, &Bytes::from(whole), 1 << 20).unwrap(),
            second
        );

        // A wrong checksum or length in a member's trailer.
        for from_end in [8, 1] {
            let mut bad = encode("gzip", &first);
            let at = bad.len() - from_end;
            bad[at] ^= 0x01;
            let err = decompress(&gzip, &Bytes::from(bad), 1 << 20).unwrap_err();
            assert_eq!(err.status, 400, "trailer byte -{from_end}");
        }

        // Bytes after the last member that are not another member.
        let mut trailing = encode("gzip", &first);
        trailing.extend_from_slice(b"\n");
        assert_eq!(
            decompress(&gzip, &Bytes::from(trailing), 1 << 20)
                .unwrap_err()
                .status,
            400
        );

        // Each member fits the limit, both together do not.
        let limit = first.len() + second.len() - 1;
        let err = decompress(&gzip, &Bytes::from(two), limit).unwrap_err();
        assert_eq!(err.status, 413);
        // At the limit exactly is fine.
        let exact = Bytes::from(encode("gzip", &first));
        assert_eq!(decompress(&gzip, &exact, first.len()).unwrap(), first);
    }

    /// The buffer's first size comes from the body's own trailer; a trailer
    /// that lies changes nothing but that guess.
    #[test]
    fn a_lying_gzip_size_is_only_a_guess() {
        let data = b"{\"hello\": \"world\"}".repeat(1000);
        let mut body = encode("gzip", &data);
        assert_eq!(gzip_size_hint(&body), data.len());
        let n = body.len();
        body[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        // Never more than deflate can expand the body's bytes.
        assert_eq!(gzip_size_hint(&body), n * 1032);
        // The length check in the trailer refuses the body.
        let err = decompress(&headers("gzip"), &Bytes::from(body), 1 << 20).unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn truncated_streams_are_refused() {
        let data = b"{\"hello\": \"world\"}".repeat(1000);
        for encoding in ["gzip", "deflate", "br", "zstd"] {
            let full = encode(encoding, &data);
            let body = Bytes::copy_from_slice(&full[..full.len() / 2]);
            let err = decompress(&headers(encoding), &body, 1 << 20).unwrap_err();
            assert_eq!(err.status, 400, "{encoding}");
        }
    }
}
