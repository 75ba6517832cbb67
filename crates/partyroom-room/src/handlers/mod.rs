//! What a room type plugs in: [`registration::Handlers`] (actions, guards, hooks, routes,
//! interceptor), the typed action inputs ([`input`]) and the contexts handlers receive
//! ([`context::Cx`], [`context::HttpCx`]). The actor calls these; nothing here runs on its
//! own.

pub(crate) mod context;
pub(crate) mod input;
pub(crate) mod registration;
