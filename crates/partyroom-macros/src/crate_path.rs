//! Finding the path of the runtime crates from the crate that uses a macro.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::quote;

/// Path to the state crate: `::partyroom::state` when the user depends on the facade,
/// `::partyroom_state` otherwise.
pub(crate) fn state_crate() -> TokenStream {
    if let Ok(found) = crate_name("partyroom") {
        let base = found_path(found, "partyroom");
        return quote!(#base::state);
    }
    match crate_name("partyroom-state") {
        Ok(found) => found_path(found, "partyroom_state"),
        Err(_) => quote!(::partyroom_state),
    }
}

fn found_path(found: FoundCrate, own: &str) -> TokenStream {
    let name = match found {
        // `extern crate self as ...` in each library makes its own name resolve inside it.
        FoundCrate::Itself => own.to_owned(),
        FoundCrate::Name(name) => name,
    };
    let ident = syn::Ident::new(&name, Span::call_site());
    quote!(::#ident)
}
