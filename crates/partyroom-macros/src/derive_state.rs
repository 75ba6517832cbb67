//! `#[derive(State)]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, GenericArgument, LitStr, PathArguments, Type};

use crate::crate_path::state_crate;

/// One state field and its options.
struct FieldSpec {
    ident: syn::Ident,
    ty: Type,
    wire: String,
    sync: bool,
    persist: bool,
    leaf: bool,
    connected: bool,
    users: bool,
    transform: Option<syn::Path>,
}

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(State)] does not support generic structs yet",
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(State)] works on structs with named fields; use `leaf_type!` for enums",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(State)] needs named fields",
        ));
    };
    let mut fields = Vec::new();
    for field in &named.named {
        if let Some(spec) = parse_field(field)? {
            fields.push(spec);
        }
    }
    check_unique(&fields)?;

    let krate = state_crate();
    let name = &input.ident;
    let vis = &input.vis;
    let shadow = format_ident!("__{}StateShadow", name);

    let mut shadow_fields = Vec::new();
    let mut take = Vec::new();
    let mut diffs = Vec::new();
    let mut sync_view = Vec::new();
    let mut persist_view = Vec::new();
    let mut persist_at = Vec::new();
    let mut loads = Vec::new();

    for f in &fields {
        let ident = &f.ident;
        let ty = &f.ty;
        let wire = &f.wire;
        let (sync, persist) = (f.sync, f.persist);
        if f.leaf {
            shadow_fields.push(quote!(#ident: #ty));
            take.push(quote!(#ident: ::core::clone::Clone::clone(&self.#ident)));
        } else {
            shadow_fields.push(quote!(#ident: <#ty as #krate::Tracked>::Shadow));
            take.push(quote!(#ident: #krate::Tracked::take_shadow(&mut self.#ident)));
        }
        let diff_call = if f.leaf {
            quote!(#krate::leaf::diff(&self.#ident, &mut shadow.#ident, __want))
        } else {
            quote!(#krate::Tracked::diff(&mut self.#ident, &mut shadow.#ident, __want))
        };
        let view = |method: TokenStream| {
            if f.leaf {
                quote!(#krate::leaf::to_json(&self.#ident))
            } else {
                quote!(#krate::Tracked::#method(&self.#ident))
            }
        };
        let field_sync_direct = sync && f.transform.is_none();
        diffs.push(quote! {
            {
                let __want = want.and(#field_sync_direct, #persist);
                let __d = #diff_call;
                if let ::core::option::Option::Some(__p) = __d.sync {
                    __sync.insert(::std::string::String::from(#wire), __p);
                }
                if !__d.persist.is_clean() {
                    __dirty.push((#wire, __d.persist));
                }
            }
        });
        if let Some(tx) = &f.transform {
            let tx_ident = format_ident!("{}__transformed", ident);
            shadow_fields.push(quote!(#tx_ident: #krate::__private::Value));
            take.push(quote!(#tx_ident: #tx(&self.#ident)));
            if sync {
                diffs.push(quote! {
                    if want.sync {
                        let __new: #krate::__private::Value = #tx(&self.#ident);
                        if let ::core::option::Option::Some(__p) =
                            #krate::patch::json_diff(&shadow.#tx_ident, &__new)
                        {
                            __sync.insert(::std::string::String::from(#wire), __p);
                            shadow.#tx_ident = __new;
                        }
                    }
                });
                sync_view.push(
                    quote!(__m.insert(::std::string::String::from(#wire), #tx(&self.#ident));),
                );
            }
        } else if sync {
            let v = view(quote!(sync_view));
            sync_view.push(quote!(__m.insert(::std::string::String::from(#wire), #v);));
        }
        if persist {
            let v = view(quote!(persist_view));
            persist_view.push(quote!(__m.insert(::std::string::String::from(#wire), #v);));
            let at = if f.leaf {
                quote!(__rest.is_empty().then(|| #krate::leaf::to_json(&self.#ident)))
            } else {
                quote!(#krate::Tracked::persist_at(&self.#ident, __rest))
            };
            persist_at.push(quote!(#wire => #at,));
        }
        let load_call = if f.leaf {
            quote!(#krate::leaf::load(&mut self.#ident, __v))
        } else {
            quote!(#krate::Tracked::load(&mut self.#ident, __v))
        };
        loads.push(quote!(#wire => #load_call.map_err(|__e| __e.at(#wire))?,));
    }

    // The users collection and the connected flag.
    let users: Vec<&FieldSpec> = fields.iter().filter(|f| f.users).collect();
    if users.len() > 1 {
        return Err(syn::Error::new(
            users[1].ident.span(),
            "only one field can be #[state(users)]",
        ));
    }
    let (user_ty, users_field, users_ref, users_mut) = match users.first() {
        Some(f) => {
            let ident = &f.ident;
            let wire = &f.wire;
            let user = map_value_type(&f.ty).ok_or_else(|| {
                syn::Error::new(
                    f.ty.span(),
                    "#[state(users)] needs a `StateMap<User>` (or `Users<User>`) field",
                )
            })?;
            (
                quote!(#user),
                quote!(::core::option::Option::Some(#wire)),
                quote!(::core::option::Option::Some(&self.#ident)),
                quote!(::core::option::Option::Some(&mut self.#ident)),
            )
        }
        None => (
            quote!(#krate::NoUsers),
            quote!(::core::option::Option::None),
            quote!(::core::option::Option::None),
            quote!(::core::option::Option::None),
        ),
    };
    let connected: Vec<&FieldSpec> = fields.iter().filter(|f| f.connected).collect();
    if connected.len() > 1 {
        return Err(syn::Error::new(
            connected[1].ident.span(),
            "only one field can be #[state(connected)]",
        ));
    }
    let (has_connected, set_connected, get_connected) = match connected.first() {
        Some(f) => {
            let ident = &f.ident;
            (
                quote!(true),
                quote!(self.#ident = connected; true),
                quote!(::core::option::Option::Some(self.#ident)),
            )
        }
        None => (
            quote!(false),
            quote!(let _ = connected; false),
            quote!(::core::option::Option::None),
        ),
    };

    let shadow_doc = format!("Shadow of [`{name}`] kept by the change tracker.");
    Ok(quote! {
        #[doc = #shadow_doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types, non_snake_case, missing_docs, missing_debug_implementations)]
        #vis struct #shadow {
            #(#shadow_fields,)*
        }

        impl #krate::Tracked for #name {
            type Shadow = #shadow;

            fn take_shadow(&mut self) -> #shadow {
                #shadow { #(#take,)* }
            }

            #[allow(unused_variables, unused_mut)]
            fn diff(&mut self, shadow: &mut #shadow, want: #krate::Want) -> #krate::Diff {
                let mut __sync = #krate::__private::Map::new();
                let mut __dirty: ::std::vec::Vec<(&'static str, #krate::Dirty)> = ::std::vec::Vec::new();
                #(#diffs)*
                #krate::Diff {
                    sync: if __sync.is_empty() {
                        ::core::option::Option::None
                    } else {
                        ::core::option::Option::Some(#krate::__private::Value::Object(__sync))
                    },
                    persist: if __dirty.is_empty() {
                        #krate::Dirty::Clean
                    } else {
                        #krate::Dirty::Fields(__dirty)
                    },
                }
            }

            #[allow(unused_mut)]
            fn sync_view(&self) -> #krate::__private::Value {
                let mut __m = #krate::__private::Map::new();
                #(#sync_view)*
                #krate::__private::Value::Object(__m)
            }

            #[allow(unused_mut)]
            fn persist_view(&self) -> #krate::__private::Value {
                let mut __m = #krate::__private::Map::new();
                #(#persist_view)*
                #krate::__private::Value::Object(__m)
            }

            fn persist_at(&self, path: &[&str]) -> ::core::option::Option<#krate::__private::Value> {
                match path.split_first() {
                    ::core::option::Option::None => ::core::option::Option::Some(#krate::Tracked::persist_view(self)),
                    ::core::option::Option::Some((__k, __rest)) => match *__k {
                        #(#persist_at)*
                        _ => ::core::option::Option::None,
                    },
                }
            }

            fn load(&mut self, value: &#krate::__private::Value) -> ::core::result::Result<(), #krate::LoadError> {
                let #krate::__private::Value::Object(__obj) = value else {
                    return ::core::result::Result::Err(#krate::__private::expected_object(value));
                };
                for (__k, __v) in __obj {
                    match __k.as_str() {
                        #(#loads)*
                        // Unknown keys (a field removed since the data was written) are ignored.
                        _ => {}
                    }
                }
                ::core::result::Result::Ok(())
            }

            fn create(value: &#krate::__private::Value) -> ::core::result::Result<Self, #krate::LoadError> {
                let mut __s = <Self as ::core::default::Default>::default();
                #krate::Tracked::load(&mut __s, value)?;
                ::core::result::Result::Ok(__s)
            }
        }

        impl #krate::State for #name {
            type User = #user_ty;
            const USERS_FIELD: ::core::option::Option<&'static str> = #users_field;
            const HAS_CONNECTED_FLAG: bool = #has_connected;

            fn users(&self) -> ::core::option::Option<&#krate::StateMap<Self::User>> {
                #users_ref
            }

            fn users_mut(&mut self) -> ::core::option::Option<&mut #krate::StateMap<Self::User>> {
                #users_mut
            }

            fn set_connected(&mut self, connected: bool) -> bool {
                #set_connected
            }

            fn connected(&self) -> ::core::option::Option<bool> {
                #get_connected
            }
        }
    })
}

fn parse_field(field: &syn::Field) -> syn::Result<Option<FieldSpec>> {
    let ident = field.ident.clone().expect("named field");
    let mut spec = FieldSpec {
        wire: ident.to_string().trim_start_matches("r#").to_owned(),
        ident,
        ty: field.ty.clone(),
        sync: true,
        persist: true,
        leaf: false,
        connected: false,
        users: false,
        transform: None,
    };
    let mut skip = false;
    let mut explicit_persist = None;
    for attr in &field.attrs {
        if !attr.path().is_ident("state") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
            } else if meta.path.is_ident("leaf") {
                spec.leaf = true;
            } else if meta.path.is_ident("connected") {
                spec.connected = true;
                spec.persist = false;
            } else if meta.path.is_ident("users") {
                spec.users = true;
            } else if meta.path.is_ident("sync") {
                spec.sync = meta.value()?.parse::<syn::LitBool>()?.value;
            } else if meta.path.is_ident("persist") {
                let value = meta.value()?.parse::<syn::LitBool>()?.value;
                explicit_persist = Some(value);
                spec.persist = value;
            } else if meta.path.is_ident("rename") {
                spec.wire = meta.value()?.parse::<LitStr>()?.value();
            } else if meta.path.is_ident("transform") {
                spec.transform = Some(meta.value()?.parse::<syn::Path>()?);
            } else {
                return Err(meta.error(
                    "unknown state option; expected one of: sync, persist, connected, users, transform, rename, leaf, skip",
                ));
            }
            Ok(())
        })?;
    }
    if spec.connected {
        if explicit_persist == Some(true) {
            return Err(syn::Error::new(
                field.span(),
                "a #[state(connected)] flag is never persisted",
            ));
        }
        spec.persist = false;
    }
    if spec.wire.is_empty() || spec.wire.contains('.') {
        return Err(syn::Error::new(
            field.span(),
            "state names must be non-empty and must not contain `.` (it separates path segments)",
        ));
    }
    Ok((!skip).then_some(spec))
}

fn check_unique(fields: &[FieldSpec]) -> syn::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].iter().any(|g| g.wire == f.wire) {
            return Err(syn::Error::new(
                f.ident.span(),
                format!("two fields use the state name `{}`", f.wire),
            ));
        }
    }
    Ok(())
}

/// `StateMap<U>` / `Users<U>` (any path ending in one of those) → `U`.
fn map_value_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "StateMap" && last.ident != "Users" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    })
}
