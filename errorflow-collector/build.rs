fn main() {
    // The migrations under sql/ are embedded by `sqlx::migrate!`; rebuild when they change.
    println!("cargo:rerun-if-changed=../sql");
}
