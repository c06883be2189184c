//! Run with
//!
//! ```not_rust
//! ERRORFLOW_DSN=http://KEY@127.0.0.1:8000/1 cargo run -p example-cli
//! ```
//!
//! A plain synchronous program: it reports an error, then panics; both
//! reach the collector before the process exits. The code is in `src/lib.rs`.

fn main() {
    example_cli::run();
}
