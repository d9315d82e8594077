//! The README demo.
fn main() {}
