//! Decoding request bodies into events (stub; filled in by the pipeline work).
use errorflow_sdk::protocol::Event;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Malformed(String),
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct CustomError {}

pub fn decode_batch(_body: &[u8], _limits: &super::Limits) -> Result<Vec<Result<Event, String>>, DecodeError> {
    unimplemented!()
}

pub fn decode_custom(_body: &[u8]) -> Result<Event, DecodeError> {
    unimplemented!()
}
