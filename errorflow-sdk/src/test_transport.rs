//! An in-memory transport for users' tests (feature `test`).
//!
//! ```
//! use std::sync::Arc;
//! use errorflow_sdk::test::TestTransport;
//!
//! let transport = Arc::new(TestTransport::new());
//! let _guard = errorflow_sdk::init(errorflow_sdk::ClientOptions::new().transport(transport.clone()));
//! errorflow_sdk::capture_message("hello", errorflow_sdk::protocol::Level::Info);
//! assert_eq!(transport.events()[0].message.as_deref(), Some("hello"));
//! ```

use std::sync::Mutex;

use crate::protocol::Event;
use crate::transport::{Stats, Transport};

/// Keeps every event in memory.
#[derive(Debug, Default)]
pub struct TestTransport {
    events: Mutex<Vec<Event>>,
}

impl TestTransport {
    /// An empty transport.
    pub fn new() -> TestTransport {
        TestTransport::default()
    }

    /// The events sent so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes and returns the events sent so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Transport for TestTransport {
    fn send(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    fn stats(&self) -> Stats {
        let n = self.events.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        Stats {
            queued: n,
            sent: n,
            ..Stats::default()
        }
    }
}
