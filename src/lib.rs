//! Examples and integration tests of the tachyon workspace; nothing to use here. The
//! repository's README is compiled below, so that its examples stay true.
#![doc = include_str!("../README.md")]
