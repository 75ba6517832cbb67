//! Connections as a room sees them: sinks and channels, not sockets. A client asks to join
//! with a [`request::ConnectRequest`]; guards see its [`request::ConnectInfo`] and may answer
//! with a [`refusal::Refusal`]; an accepted connection is a [`live::Conn`] whose frames go to
//! a [`sink::ConnectionSink`] or to channels.

pub(crate) mod live;
pub(crate) mod refusal;
pub(crate) mod request;
pub(crate) mod sink;
