//! Compile-time tests of `#[websocket]`: the cases are in `tests/ui/`, run by `tests/ui.rs`.
//! This library is empty; it only gives the package a root.
