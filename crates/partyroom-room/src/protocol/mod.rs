//! The wire, and nothing else: what clients send ([`inbound`]), the packets rooms send
//! ([`outbound`]), close codes ([`close`]) and the HTTP request and response types
//! ([`http`]). Pure functions and plain types: no room, no task, no clock.

pub(crate) mod close;
pub mod http;
pub(crate) mod inbound;
pub(crate) mod outbound;
