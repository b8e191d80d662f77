//! HTTP plumbing shared by every route: the request layer ([`layer`]: request id, deadline, one
//! log line) and the extractors ([`extract`]: typed JSON bodies). The routes and the router that
//! mounts them are [`crate::routes`].

pub mod extract;
pub mod layer;

pub use layer::RequestId;
