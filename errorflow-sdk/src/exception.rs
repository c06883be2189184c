//! Rust errors as protocol exceptions: the `source()` chain and a type name.

use crate::protocol::Exception;

/// The exception chain of `error`, outermost first, following `source()`.
pub fn exception_chain(
    error: &(dyn std::error::Error + 'static),
    mechanism: &str,
) -> Vec<Exception> {
    let mut chain = Vec::new();
    let mut current = Some(error);
    // A cycle in `source()` would loop forever; real chains are short.
    while let Some(err) = current {
        if chain.len() >= 32 {
            break;
        }
        let mut exception = Exception::new(error_type_name(err), err.to_string());
        if chain.is_empty() {
            exception.mechanism = Some(mechanism.to_string());
            exception.handled = Some(true);
        }
        chain.push(exception);
        current = err.source();
    }
    chain
}

/// The best type name available for a `dyn Error`.
///
/// Rust has no runtime type names for trait objects, so well-known std
/// types are recognised by downcasting and the rest are named after the
/// leading identifier of their `Debug` output (`NotFound { path: … }` →
/// `NotFound`), which for derived `Debug` is the type or variant name.
pub fn error_type_name(error: &(dyn std::error::Error + 'static)) -> String {
    macro_rules! known {
        ($($ty:ty),*) => {
            $(if error.is::<$ty>() { return stringify!($ty).replace(' ', ""); })*
        };
    }
    known!(
        std::io::Error,
        std::num::ParseIntError,
        std::num::ParseFloatError,
        std::str::Utf8Error,
        std::string::FromUtf8Error,
        std::fmt::Error,
        serde_json::Error
    );
    let debug = format!("{error:?}");
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        "Error".to_string()
    } else {
        name.trim_end_matches(':').to_string()
    }
}
