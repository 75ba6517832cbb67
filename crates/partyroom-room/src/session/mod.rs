//! Users' sessions: the private session id a client connects with maps to a public id
//! ([`table`]); sessions outlive their connections and expire ([`lifecycle`]); a session can
//! move to another room with a single-use token ([`transfer`]); ids are made in [`ids`].
//! Plain data and bookkeeping: the room actor decides when, and passes the time in.

pub(crate) mod ids;
pub(crate) mod lifecycle;
pub(crate) mod table;
pub(crate) mod transfer;
