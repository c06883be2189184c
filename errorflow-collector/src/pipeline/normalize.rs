use errorflow_sdk::protocol::Event;
pub fn normalize(event: Event, _ctx: &super::Context, _limits: &super::Limits) -> Result<Event, super::Rejected> {
    Ok(event)
}
