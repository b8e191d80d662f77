//! One module per route: its typed request (newtypes that validate, so a bad request never
//! reaches WeChat), its response, and its handler. [`crate::http::router`] mounts them.

pub mod login;
pub mod phone;
pub mod qrcode;
pub mod session;
pub mod types;
