//! Rules about native stack frames (C, C++, Objective-C, Swift, game
//! consoles) shared by the Sentry mapping and grouping: which binary is the
//! application's, and the names native SDKs send that change with every
//! build.
//!
//! A native frame says where its code lives in `package`, the path of the
//! binary or library (`/usr/lib/system/libdyld.dylib`, an iOS app bundle's
//! executable, an Android app's `lib/arm64/libgame.so`). Sentry decides from
//! that path whether a frame is the application's, for SDKs (Cocoa, Native)
//! that send no `in_app`: the operating system's libraries and frameworks
//! are not, and neither are the frameworks an app bundles only to report
//! crashes (Sentry's own, KSCrash) or to run Swift.

/// Whether `platform` (an event's, lowercased) is native code: its frames
/// are binaries' symbols, with `package` and addresses.
pub fn is_native_platform(platform: &str) -> bool {
    matches!(
        platform,
        "native"
            | "c"
            | "cpp"
            | "cocoa"
            | "objc"
            | "swift"
            | "nintendo-switch"
            | "playstation"
            | "xbox"
    )
}

/// Path prefixes of the operating systems' own binaries.
const SYSTEM_PREFIXES: &[&str] = &[
    "/System/Library/",
    "/usr/lib/",
    "/usr/libexec/",
    "/lib/",
    "/lib64/",
    "/system/lib/",
    "/system/lib64/",
    "/apex/",
    "/Library/Developer/CoreSimulator/Profiles/",
    "/Applications/Xcode",
];

/// File names (the start of them) of system libraries, wherever they are.
const SYSTEM_LIBRARIES: &[&str] = &[
    "libsystem_",
    "libdyld",
    "libobjc",
    "libdispatch",
    "libc++",
    "libc.so",
    "libm.so",
    "libpthread",
    "libart.so",
    "libandroid_runtime",
    "ld-linux",
    "linux-gate.so",
    "linux-vdso.so",
    "ntdll.dll",
    "kernel32.dll",
    "kernelbase.dll",
    "ucrtbase.dll",
    "msvcrt.dll",
];

/// Frameworks that apps bundle only to report crashes: the SDK's own.
const SDK_FRAMEWORKS: &[&str] = &[
    "Sentry.framework/",
    "SentrySwift.framework/",
    "SentryPrivate.framework/",
    "KSCrash.framework/",
];

/// Libraries of native SDKs (Sentry Native, Crashpad, Breakpad).
const SDK_LIBRARIES: &[&str] = &["libsentry", "sentry.dll", "crashpad_handler"];

/// Whether the binary at `package` holds the application's own code:
/// `Some(false)` for the system's libraries and frameworks and for SDK
/// frameworks, `Some(true)` for binaries inside an app bundle, an installed
/// Android app or a user's directory, `None` when the path does not say
/// (a bare name such as `UIKitCore`).
pub fn package_in_app(package: &str) -> Option<bool> {
    let package = package.trim();
    if package.is_empty() {
        return None;
    }
    let file = image_name(package);
    if is_sdk_package(package) {
        return Some(false);
    }
    // Swift's runtime, bundled into older apps' `Frameworks/` directory.
    if file.starts_with("libswift") && file.ends_with(".dylib") {
        return Some(false);
    }
    let lower_file = file.to_ascii_lowercase();
    if SYSTEM_LIBRARIES.iter().any(|l| lower_file.starts_with(l)) {
        return Some(false);
    }
    // Inside an app: iOS and simulator bundles, macOS apps, Android apps.
    if package.contains("/Bundle/Application/")
        || package.contains(".app/")
        || package.starts_with("/data/app/")
        || package.starts_with("/data/data/")
    {
        return Some(true);
    }
    if SYSTEM_PREFIXES.iter().any(|p| package.starts_with(p)) {
        return Some(false);
    }
    // Windows: the system's directory, else the application's.
    let bytes = package.as_bytes();
    if bytes.len() > 3 && bytes[1] == b':' && (bytes[2] == b'\\' || bytes[2] == b'/') {
        let rest = package[3..].to_ascii_lowercase();
        return Some(!rest.starts_with("windows\\") && !rest.starts_with("windows/"));
    }
    if package.starts_with("/Users/")
        || package.starts_with("/home/")
        || package.starts_with("/usr/local/")
        || package.starts_with("/opt/")
    {
        return Some(true);
    }
    None
}

/// Whether the binary at `package` is a crash reporter's: Sentry's own
/// frameworks and libraries, KSCrash, Crashpad. Never the application's,
/// whatever the SDK says.
pub fn is_sdk_package(package: &str) -> bool {
    let file = image_name(package.trim());
    SDK_FRAMEWORKS.iter().any(|f| package.contains(f))
        || SDK_LIBRARIES.iter().any(|l| file.starts_with(l))
}

/// The file name of a binary's path (`/usr/lib/libc.so.6` → `libc.so.6`),
/// with `/` or `\` as separator.
pub fn image_name(package: &str) -> &str {
    package
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or(package)
}

/// Whether `s` is a build or debug identifier rather than a name: 16 or
/// more hex digits, with the dashes of a UUID allowed
/// (`792DEB574467EFAF89F8386B018D1357`).
pub fn is_build_id(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_hexdigit).count();
    digits >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A native function name without a leading build id
/// (`792DEB574467EFAF89F8386B018D1357::nnMain` → `nnMain`), as console
/// SDKs write their symbols.
pub fn strip_build_id(name: &str) -> &str {
    match name.split_once("::") {
        Some((head, rest)) if is_build_id(head) && !rest.is_empty() => rest,
        _ => name,
    }
}

/// A C++ or Swift function name without its parameter list and return type
/// (`ViewController.causeCrash(Any) -> ()` → `ViewController.causeCrash`,
/// `ns::Parser::parse(char const*, int)` → `ns::Parser::parse`), which vary
/// with a signature and are not part of the name. Objective-C names
/// (`-[Class selector:]`) and names without a parameter list stay as they are.
pub fn trim_parameters(name: &str) -> &str {
    if name.starts_with("-[") || name.starts_with("+[") {
        return name;
    }
    let mut from = 0;
    while let Some(i) = name[from..].find('(').map(|i| from + i) {
        // `operator()` is a name, not a parameter list.
        if name[..i].ends_with("operator") && name[i..].starts_with("()") {
            from = i + 2;
            continue;
        }
        let before = name[..i].chars().next_back();
        let after_name =
            before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '>' | '$'));
        if i > 0 && (after_name || name[..i].ends_with("operator()")) {
            return name[..i].trim_end();
        }
        return name;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_binaries() {
        let app =
            "/var/containers/Bundle/Application/575F9D39-D486-4728-B035-84923A0BE206/Shop.app/Shop";
        assert_eq!(package_in_app(app), Some(true));
        assert_eq!(
            package_in_app("/private/var/containers/Bundle/Application/X/Shop.app/Frameworks/Sentry.framework/Sentry"),
            Some(false),
            "the SDK's own framework"
        );
        assert_eq!(
            package_in_app("/private/var/containers/Bundle/Application/X/Shop.app/Frameworks/Charts.framework/Charts"),
            Some(true),
            "a framework the app ships"
        );
        for system in [
            "/usr/lib/system/libdyld.dylib",
            "/System/Library/Frameworks/UIKit.framework/UIKit",
            "/System/Library/PrivateFrameworks/GraphicsServices.framework/GraphicsServices",
            "/usr/lib/libobjc.A.dylib",
            "libsystem_kernel.dylib",
            "libdyld.dylib",
            "/Users/me/Shop.app/Frameworks/libswiftCore.dylib",
        ] {
            assert_eq!(package_in_app(system), Some(false), "{system}");
        }
        assert_eq!(
            package_in_app("/Users/me/Library/Developer/Xcode/DerivedData/Shop/Build/Products/Debug/Shop.app/Contents/MacOS/Shop"),
            Some(true)
        );
        assert_eq!(package_in_app("UIKitCore"), None);
        assert_eq!(package_in_app("???"), None);
    }

    #[test]
    fn linux_android_and_windows_binaries() {
        assert_eq!(
            package_in_app("/lib/x86_64-linux-gnu/libc.so.6"),
            Some(false)
        );
        assert_eq!(package_in_app("/system/lib64/libc.so"), Some(false));
        assert_eq!(
            package_in_app("/data/app/com.shop-1/lib/arm64/libgame.so"),
            Some(true)
        );
        assert_eq!(
            package_in_app("/data/app/com.shop-1/lib/arm64/libsentry.so"),
            Some(false)
        );
        assert_eq!(package_in_app("/opt/shop/bin/shopd"), Some(true));
        assert_eq!(
            package_in_app("C:\\Windows\\System32\\ntdll.dll"),
            Some(false)
        );
        assert_eq!(
            package_in_app("C:\\Windows\\System32\\user32.dll"),
            Some(false)
        );
        assert_eq!(package_in_app("C:\\Games\\Shop\\shop.exe"), Some(true));
        assert_eq!(image_name("C:\\Games\\Shop\\shop.exe"), "shop.exe");
        assert_eq!(image_name("/usr/lib/libc.so.6"), "libc.so.6");
        assert_eq!(image_name("nnSdk"), "nnSdk");
    }

    #[test]
    fn names_without_build_ids_and_parameters() {
        assert_eq!(
            strip_build_id("792DEB574467EFAF89F8386B018D1357::nnMain"),
            "nnMain"
        );
        assert_eq!(strip_build_id("game::World::tick"), "game::World::tick");
        assert_eq!(
            strip_build_id("deadbeef::f"),
            "deadbeef::f",
            "too short for a build id"
        );
        assert!(is_build_id("0D570D257E61E339E740A6DB116D5442C1643083"));
        assert!(is_build_id("575f9d39-d486-4728-b035-84923a0be206"));
        assert!(!is_build_id("nnMain"));

        assert_eq!(
            trim_parameters("ViewController.causeCrash(Any) -> ()"),
            "ViewController.causeCrash"
        );
        assert_eq!(
            trim_parameters("ns::Parser::parse(char const*, int)"),
            "ns::Parser::parse"
        );
        assert_eq!(trim_parameters("Vec<int>::push(int)"), "Vec<int>::push");
        assert_eq!(
            trim_parameters("Functor::operator()(int)"),
            "Functor::operator()"
        );
        assert_eq!(
            trim_parameters("-[SentryClient crash]"),
            "-[SentryClient crash]"
        );
        assert_eq!(trim_parameters("main"), "main");
        assert_eq!(
            trim_parameters("(anonymous namespace)::f"),
            "(anonymous namespace)::f"
        );
    }
}
