//! Macros for partyroom. Use them through `partyroom` (or `partyroom-state`), which re-exports
//! them next to the traits they implement.

use proc_macro::TokenStream;

mod crate_path;
mod derive_state;

/// Derive `Tracked` and `State` for a struct with named fields, making it synchronized state.
///
/// Field attributes (`#[state(...)]`, comma-separated):
///
/// | attribute | effect |
/// |---|---|
/// | `sync = false` | kept on the server and persisted, never sent to clients |
/// | `persist = false` | sent to clients, never stored |
/// | `connected` | the user's connection flag: a `bool` set by the runtime, synced, never stored |
/// | `users` | the users collection (a `StateMap<User>`), keyed by public id |
/// | `transform = path` | `fn(&T) -> serde_json::Value` applied to what clients receive (storage keeps the raw value) |
/// | `rename = "name"` | the name used on the wire and in storage |
/// | `leaf` | treat the field's type as an opaque serde value (`Serialize + DeserializeOwned + Clone + PartialEq`) |
/// | `skip` | not state at all: neither synced nor stored nor loaded |
///
/// The struct must implement `Default` and `Clone` (entries of collections are created from
/// `Default` when loading).
#[proc_macro_derive(State, attributes(state))]
pub fn derive_state(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    derive_state::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
