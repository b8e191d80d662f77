//! The end-to-end tests, one module per concern, in one test binary (each test binary links the
//! AWS SDK and the whole stack; one binary keeps a clean CI build small). Run one concern with
//! `cargo test -p e2e --test suite keeper::`.

mod aws_signing;
mod cargo_lambda_watch;
mod content;
mod keeper;
mod lambda_login;
mod lambda_push;
mod local_server;
mod login;
mod me;
mod metrics;
mod notify;
mod ops;
mod push;
mod qrcode;
mod routes;
mod secrets;
mod store_suite;
mod tokens;
mod virtual_clock;
