use errorflow_sdk::protocol::Event;
use crate::model::NormalizedEvent;
pub const FINGERPRINT_VERSION: i32 = 1;
pub fn build(_event: Event, _ctx: &super::Context) -> NormalizedEvent {
    unimplemented!()
}
