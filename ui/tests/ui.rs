//! Compile-time errors of `#[websocket]`: each mistake gives one error, on the token at fault,
//! saying what to do. The expected messages are the `.stderr` files beside the cases.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
