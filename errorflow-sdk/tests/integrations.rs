//! Integrations: what `init` sets up besides the client (the panic hook by
//! default, and the application's own).

mod common;

use std::sync::{Arc, Mutex};

use common::{serial, Memory};
use errorflow_sdk::protocol::Level;
use errorflow_sdk::{Client, ClientOptions, Integration};

/// Records each setup: the integrations the options it was given list, and
/// whether a client was bound by then.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, bool)>>>);

impl Integration for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn setup(&self, options: &ClientOptions) {
        let bound = Client::current().is_some();
        let debug = format!("{options:?}");
        let listed = debug
            .split("integrations: ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .map(|list| format!("{list}]"))
            .unwrap_or_default();
        self.0.lock().unwrap().push((listed, bound));
        // An integration may capture as soon as it is set up.
        errorflow_sdk::capture_message("set up", Level::Info);
    }
}

#[test]
fn an_integration_is_set_up_once_its_client_is_bound() {
    let _serial = serial();
    let memory = Arc::new(Memory::default());
    let recorder = Recorder::default();
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .service("billing")
            .transport(memory.clone())
            .integration(recorder.clone()),
    );
    // Set up once, after the client was bound, behind the default panic hook.
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [(r#"["panic", "recorder"]"#.to_string(), true)]
    );
    drop(guard);
    let events = memory.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message.as_deref(), Some("set up"));
    assert_eq!(events[0].service.as_deref(), Some("billing"));
}

#[test]
fn integrations_are_not_set_up_when_the_sdk_is_a_no_op() {
    let _serial = serial();
    let recorder = Recorder::default();
    // No DSN and no transport: nothing is sent, nothing is set up.
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .panic_hook(false)
            .integration(recorder.clone()),
    );
    assert!(!guard.is_enabled());
    assert!(recorder.0.lock().unwrap().is_empty());
}

#[test]
fn the_panic_hook_is_a_default_integration_that_can_be_turned_off() {
    let _serial = serial();
    let panic_in = |options: ClientOptions| {
        let memory = Arc::new(Memory::default());
        let guard = errorflow_sdk::init(options.transport(memory.clone()));
        let result = std::panic::catch_unwind(|| panic!("integration test panic"));
        assert!(result.is_err());
        drop(guard);
        memory.events()
    };

    let events = panic_in(ClientOptions::new());
    assert_eq!(events.len(), 1, "the default options report panics");
    assert_eq!(events[0].level, Level::Fatal);
    assert_eq!(events[0].exception[0].mechanism.as_deref(), Some("panic"));
    assert_eq!(events[0].message.as_deref(), Some("integration test panic"));

    // The hook stays installed for the process, but a client configured
    // without it is not reported to.
    let events = panic_in(ClientOptions::new().panic_hook(false));
    assert!(events.is_empty(), "{events:?}");
}
