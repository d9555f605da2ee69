//! Properties of the public API over many inputs: which numbers `CloseCode::new` accepts, and
//! the close reasons a real handler sends, whatever their length and content.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::{Served, raw_frames, serve};
use tachyon::close::InvalidCloseCode;
use tachyon::{CloseCode, Tachyon, WebSocket, websocket};

/// The rule of RFC 6455 §7.4 as `tachyon/src/close.rs` states it: the codes that may be sent.
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Every `u16` (65,536 of them, so all are checked rather than a sample): `CloseCode::new`
/// accepts exactly the sendable codes, and every view of an accepted code is the number.
#[test]
fn close_code_new_accepts_exactly_the_sendable_codes() {
    for code in 0..=u16::MAX {
        match CloseCode::new(code) {
            Ok(close) => {
                assert!(sendable(code), "{code} was accepted");
                assert_eq!(close.as_u16(), code);
                assert_eq!(u16::from(close), code);
                assert_eq!(close, code);
                assert_eq!(close.to_string(), code.to_string());
                assert_eq!(close.is_private(), (4000..=4999).contains(&code));
                assert_eq!(CloseCode::try_from(code), Ok(close));
            }
            Err(error) => {
                assert!(!sendable(code), "{code} was refused");
                assert_eq!(error, InvalidCloseCode(code));
                assert_eq!(CloseCode::try_from(code), Err(error));
                assert!(
                    error.to_string().starts_with(&format!("{code} ")),
                    "{error}"
                );
            }
        }
    }
}

/// Accepts, then closes with the code and the reason the client put in the URL.
#[websocket("/close/{code}?<reason>")]
async fn closer(mut ws: WebSocket, code: u16, reason: String) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.close(code, &reason).await
}

/// A sendable close code.
fn sendable_code() -> impl Strategy<Value = u16> {
    prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999]
}

/// A reason of 0 to 200 characters of every UTF-8 width (up to 800 bytes), so that cuts land
/// inside characters of each width.
fn reason() -> impl Strategy<Value = String> {
    let character = prop_oneof![
        any::<char>(),
        proptest::char::range('a', 'z'),
        Just('é'),
        Just('€'),
        Just('😀'),
    ];
    proptest::collection::vec(character, 0..200).prop_map(String::from_iter)
}

/// Every byte percent-encoded, so the query carries any text as it is.
fn percent_encoded(text: &str) -> String {
    text.bytes().map(|byte| format!("%{byte:02X}")).collect()
}

/// Opens `/close/{code}` with `reason` and returns the server's only frame, a close frame, as
/// its code and its reason's bytes.
async fn close_frame(served: &Served, code: u16, reason: &str) -> (u16, Vec<u8>) {
    let path = format!("/close/{code}?reason={}", percent_encoded(reason));
    let mut frames = raw_frames(served, &path).await;
    assert_eq!(frames.len(), 1, "the server should only close: {frames:?}");
    let (opcode, payload) = frames.remove(0);
    assert_eq!(opcode, 0x8, "a close frame");
    let (code, reason) = payload
        .split_at_checked(2)
        .expect("a close frame with a code");
    (u16::from_be_bytes([code[0], code[1]]), reason.to_vec())
}

/// Whatever the reason, the client gets the longest prefix of it that fits a close frame's 123
/// bytes and ends on a character boundary, as valid UTF-8. One server serves every case.
#[test]
fn close_reasons_arrive_as_their_longest_prefix_that_fits() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let served = runtime.block_on(serve(Tachyon::new().websocket(closer)));
    let mut runner = TestRunner::new(Config {
        cases: 64,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(sendable_code(), reason()), |(code, reason)| {
        let (received_code, received) = runtime.block_on(close_frame(&served, code, &reason));
        prop_assert_eq!(received_code, code);
        let received = std::str::from_utf8(&received)
            .map_err(|error| TestCaseError::fail(format!("not UTF-8 ({error}): {received:?}")))?;
        prop_assert!(
            received.len() <= CloseCode::MAX_REASON_BYTES,
            "{} bytes",
            received.len()
        );
        prop_assert!(reason.starts_with(received), "not a prefix: {received:?}");
        // The longest such prefix: all of it, or the next character would not have fitted.
        if let Some(next) = reason[received.len()..].chars().next() {
            prop_assert!(
                received.len() + next.len_utf8() > CloseCode::MAX_REASON_BYTES,
                "cut too short: {} bytes, then {next:?}",
                received.len()
            );
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
