//! Examples and integration tests of the tachyon workspace; nothing to use here.
