//! Decoding request bodies into events (stub; filled in by the pipeline work).
use errorflow_sdk::protocol::Event;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid utf-8")]
    InvalidUtf8,
    #[error("{message}")]
    Malformed { message: String },
    #[error("{message}")]
    WrongShape { message: String },
    #[error("too many events: {count} > {max}")]
    TooManyEvents { count: usize, max: usize },
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct CustomError {}

pub fn decode_batch(_body: &[u8], _limits: &super::Limits) -> Result<Vec<Result<Event, String>>, DecodeError> {
    unimplemented!()
}

pub fn decode_custom(_body: &[u8], _id: Uuid) -> Result<Event, DecodeError> {
    unimplemented!()
}
