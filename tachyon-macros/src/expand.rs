//! Generating the handler. The function keeps its name, arguments and result, but returns a
//! `HandlerFuture<name, _>`; that return type is how `Tachyon::websocket(name)` finds the route.
//! A braced struct of the same name (type namespace only, so it never clashes with a variable or
//! the function, only with a module or type of that name) carries `name::PATH` and
//! `name::route()`, and holds the original body.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType};

use crate::parse::{Attribute, Handler, Role};

pub(crate) fn expand(attribute: &Attribute, function: ItemFn) -> syn::Result<TokenStream> {
    let handler = Handler::new(attribute, function)?;
    let krate = match &attribute.krate {
        Some(path) => quote!(#path),
        None => quote!(::tachyon),
    };
    let private = quote!(#krate::__private);
    let axum = quote!(#private::axum);

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &handler.function;
    let name = &sig.ident;
    let axum_path = &handler.template.axum_path;
    // Docs and `#[deprecated]` belong to the function users call; `#[cfg]` to every item; the
    // rest (lint levels, `#[tracing::instrument]`...) to the body, in the generated struct.
    let (outer, attrs): (Vec<_>, Vec<_>) = attrs
        .iter()
        .partition(|attr| attr.path().is_ident("doc") || attr.path().is_ident("deprecated"));
    let docs: Vec<_> = outer
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .collect();
    let cfgs: Vec<_> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect();
    let hidden = docs.iter().any(|attr| {
        attr.parse_args::<syn::Ident>()
            .is_ok_and(|word| word == "hidden")
    });
    let struct_hidden = if hidden {
        quote!(#[doc(hidden)])
    } else {
        quote!()
    };
    let generated_doc = format!("WebSocket handler at `{axum_path}`.");
    let docs = if docs.is_empty() {
        quote!(#[doc = #generated_doc] #(#outer)*)
    } else {
        quote!(#(#outer)*)
    };

    let output = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let output_span = match &sig.output {
        ReturnType::Default => sig.paren_token.span.join(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let mut inner = sig.clone();
    inner.ident = format_ident!("__tachyon_handler");
    // The body is a function of another name: `#[tracing::instrument]` would name its span
    // after that one, so it is told the handler's name (unless it was given one).
    let attrs: Vec<syn::Attribute> = attrs
        .iter()
        .map(|attr| named_instrument(attr, name))
        .collect();

    let types: Vec<_> = handler
        .arguments
        .iter()
        .map(|argument| &argument.ty)
        .collect();
    let values: Vec<_> = (0..types.len())
        .map(|index| format_ident!("__tachyon_arg{}", index))
        .collect();
    let extractor_types: Vec<_> = handler
        .arguments
        .iter()
        .filter(|argument| matches!(argument.role, Role::Extractor))
        .map(|argument| &argument.ty)
        .collect();
    let state = format_ident!("__TachyonS");
    let bounds = quote! {
        #state: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
        #( #extractor_types: #axum::extract::FromRequestParts<#state>, )*
    };

    // Each extractor argument is checked against the handler's state (`state = T`, or the `T`
    // of its first `State<T>` argument), spanned at the argument: a mismatch is reported there,
    // not at the registration. (The app's own state is only known where it registers the
    // handler, which is where a handler/app mismatch is reported.)
    let handler_state = attribute.state.clone().or_else(|| {
        extractor_types
            .iter()
            .find_map(|ty| crate::parse::state_inner(ty).cloned())
    });
    let state_checks = match &handler_state {
        Some(state_type) => {
            let checks = extractor_types.iter().map(|ty| {
                quote_spanned! {ty.span()=>
                    __tachyon_check::<#ty, #state_type>();
                }
            });
            quote! {
                const _: () = {
                    fn __tachyon_check<__T: #private::Extractor<__S>, __S>() {}
                    #[allow(dead_code)]
                    fn __tachyon_checks() {
                        #(#checks)*
                    }
                };
            }
        }
        None => quote!(),
    };
    let connection = format_ident!("__tachyon_connection");
    // The handler's own settings, over those of the app and its routers, built once in a static
    // (its connection limit, if any, is shared by all requests). Each call is spanned at its
    // key, so a value of the wrong type is reported there.
    let calls = attribute
        .settings
        .iter()
        .map(|(key, value)| quote_spanned!(key.span()=> .#key(#value)));
    let settings = quote! {
        static __TACHYON_SETTINGS: #private::LazyLock<#private::Settings> =
            #private::LazyLock::new(|| #private::Settings::new() #(#calls)*);
    };
    let mut extractions = Vec::new();
    let mut call = Vec::new();
    for ((argument, value), ty) in handler.arguments.iter().zip(&values).zip(&types) {
        match &argument.role {
            Role::Socket => call.push(quote!(__tachyon_socket)),
            Role::PathParam(param) => {
                let type_name = quote!(#ty).to_string().replace(' ', "");
                extractions.push(quote_spanned! {ty.span()=>
                    let #value: #ty = match #connection.path_param::<#ty>(#param, #type_name) {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(response) => return response,
                    };
                });
                call.push(quote!(#value));
            }
            Role::QueryParam(param, inner) => {
                let extraction = match inner {
                    Some(inner) => {
                        let type_name = quote!(#inner).to_string().replace(' ', "");
                        quote!(#connection.optional_query_param::<#inner>(#param, #type_name))
                    }
                    None => {
                        let type_name = quote!(#ty).to_string().replace(' ', "");
                        quote!(#connection.query_param::<#ty>(#param, #type_name))
                    }
                };
                extractions.push(quote_spanned! {ty.span()=>
                    let #value: #ty = match #extraction {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(response) => return response,
                    };
                });
                call.push(quote!(#value));
            }
            Role::Extractor => {
                extractions.push(quote_spanned! {ty.span()=>
                    let #value: #ty = match #connection.extract::<#ty, #state>(&__tachyon_state).await {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(response) => return response,
                    };
                });
                call.push(quote!(#value));
            }
        }
    }
    let mutability = if extractor_types.is_empty() {
        quote!()
    } else {
        quote!(mut)
    };
    // The only place that needs the return type to be a `HandlerReturn`: spanned at the return
    // type, so a wrong one gives one error, there.
    let into_result = quote_spanned! {output_span=>
        <#output as #krate::handler::HandlerReturn>::into_result
    };
    // A plain function pointer: the call below then has no bound on the return type left to
    // fail, so a wrong one is reported once, at the return type.
    let into_result_type = quote_spanned! {output_span=>
        fn(#output) -> ::core::result::Result<(), #krate::handler::Failure>
    };
    // The handler's future goes to `run` as it is, with the function that reads its result:
    // wrapping it in an `async` block would keep a second copy of its arguments.
    let run = quote! {
        #[allow(clippy::type_complexity)]
        let __tachyon_into_result: #into_result_type = #into_result;
        #connection
            .run(
                move |__tachyon_socket| Self::__tachyon_handler(#(#call),*),
                __tachyon_into_result,
            )
            .await
    };
    // The function keeps its name and arguments (plain names where the handler had them, but
    // not `_name`s, which it does use).
    let parameters: Vec<_> = handler
        .function
        .sig
        .inputs
        .iter()
        .zip(&values)
        .map(|(input, value)| match input {
            syn::FnArg::Typed(typed) => match &*typed.pat {
                syn::Pat::Ident(ident)
                    if ident.subpat.is_none()
                        && ident.by_ref.is_none()
                        && !ident.ident.to_string().starts_with('_') =>
                {
                    ident.ident.clone()
                }
                _ => value.clone(),
            },
            syn::FnArg::Receiver(_) => value.clone(),
        })
        .collect();
    let wrapper = quote_spanned! {name.span()=>
        #krate::handler::HandlerFuture::new(#name::__tachyon_handler(#(#parameters),*))
    };
    let route_doc = format!(
        "The route of the [`{name}()`]({name}()) WebSocket handler: `{name}::PATH` is \
         `\"{axum_path}\"`, `{name}::route()` its axum `MethodRouter`."
    );

    Ok(quote! {
        #docs
        #(#cfgs)*
        // It repeats the handler's signature: lints about that signature are the handler's.
        #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
        #vis fn #name(#(#parameters: #types),*) -> #krate::handler::HandlerFuture<#name, #output> {
            #wrapper
        }

        #[doc = #route_doc]
        #struct_hidden
        #(#cfgs)*
        #[allow(non_camel_case_types, dead_code)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #name {}

        #(#cfgs)*
        #[allow(dead_code)]
        impl #name {
            /// The route's path, in axum's syntax.
            #vis const PATH: &'static str = #axum_path;

            /// The route for axum: `axum::Router::new().route(PATH, route())`.
            #vis fn route<#state>() -> #axum::routing::MethodRouter<#state>
            where
                #bounds
            {
                // `any`, not `get`: an HTTP/2 WebSocket handshake is a `CONNECT` (RFC 8441).
                #axum::routing::any(
                    |#axum::extract::State(__tachyon_state): #axum::extract::State<#state>,
                     __tachyon_request: #axum::extract::Request| async move {
                        // Every answer to the handshake, refusals included, goes through it.
                        let __tachyon_handshake = #private::Handshake::begin(&__tachyon_request);
                        let __tachyon_response: #axum::response::Response = async move {
                            #settings
                            let #mutability #connection =
                                match #private::Connection::start(
                                    __tachyon_request,
                                    &__tachyon_state,
                                    &__TACHYON_SETTINGS,
                                )
                                .await
                                {
                                    ::core::result::Result::Ok(connection) => connection,
                                    ::core::result::Result::Err(response) => return response,
                                };
                            #(#extractions)*
                            #run
                        }
                        .await;
                        __tachyon_handshake.answered(__tachyon_response)
                    },
                )
            }

            // `#[websocket]` requires `async` even of a handler that never awaits.
            #[allow(clippy::unused_async)]
            #(#attrs)*
            #inner #block
        }

        #state_checks

        #(#cfgs)*
        impl<#state> #krate::handler::WebSocketRoute<#state> for #name
        where
            #bounds
        {
            const PATH: &'static str = #axum_path;

            fn method_router() -> #axum::routing::MethodRouter<#state> {
                Self::route()
            }
        }
    })
}

/// `#[instrument]` (`#[tracing::instrument]`, any path ending in `instrument`) with
/// `name = "<the handler's name>"` added, unless it names its span already; any other attribute
/// as it is.
fn named_instrument(attr: &syn::Attribute, name: &syn::Ident) -> syn::Attribute {
    let is_instrument = attr
        .path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "instrument");
    if !is_instrument {
        return attr.clone();
    }
    let span_name = syn::LitStr::new(&name.to_string(), name.span());
    let mut attr = attr.clone();
    match &mut attr.meta {
        syn::Meta::Path(path) => {
            let path = path.clone();
            attr.meta = syn::parse_quote!(#path(name = #span_name));
        }
        syn::Meta::List(list) => {
            // `name = ...` among the arguments (at the top level: not inside `fields(...)`).
            let tokens: Vec<_> = list.tokens.clone().into_iter().collect();
            let named = tokens.windows(2).any(|pair| {
                matches!(
                    pair,
                    [proc_macro2::TokenTree::Ident(ident), proc_macro2::TokenTree::Punct(punct)]
                        if ident == "name" && punct.as_char() == '='
                )
            });
            if !named {
                let tokens = &list.tokens;
                list.tokens = if tokens.is_empty() {
                    quote!(name = #span_name)
                } else {
                    quote!(name = #span_name, #tokens)
                };
            }
        }
        // `#[instrument = ...]` is not tracing's: left to fail as it would.
        syn::Meta::NameValue(_) => {}
    }
    attr
}

/// What an attribute with a mistake expands to, beside its error: the function with the user's
/// signature and the route items, so that nothing else in the crate errors because of the one
/// mistake. The function never runs: the crate does not compile until the mistake is fixed.
pub(crate) fn stub(attribute: Option<&Attribute>, function: &ItemFn) -> TokenStream {
    let krate = match attribute.and_then(|attribute| attribute.krate.as_ref()) {
        Some(path) => quote!(#path),
        None => quote!(::tachyon),
    };
    let axum = quote!(#krate::__private::axum);
    let path = attribute
        .and_then(|attribute| crate::path::parse(&attribute.path.value()).ok())
        .map_or_else(|| "/".to_owned(), |template| template.axum_path);
    let ItemFn {
        attrs, vis, sig, ..
    } = function;
    let name = &sig.ident;
    let (outer, rest): (Vec<_>, Vec<_>) = attrs
        .iter()
        .partition(|attr| attr.path().is_ident("doc") || attr.path().is_ident("deprecated"));
    let cfgs: Vec<_> = rest
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect();
    let output = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let (names, types): (Vec<_>, Vec<_>) = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            syn::FnArg::Typed(typed) => Some(&typed.ty),
            syn::FnArg::Receiver(_) => None,
        })
        .enumerate()
        .map(|(index, ty)| (format_ident!("__tachyon_arg{}", index), ty))
        .unzip();
    let state = format_ident!("__TachyonS");
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    quote! {
        #(#outer)*
        #(#cfgs)*
        #[allow(unused_variables, clippy::all)]
        #vis fn #name #generics (#(#names: #types),*) -> #krate::handler::HandlerFuture<#name, #output>
        #where_clause
        {
            #krate::handler::HandlerFuture::new(::core::future::pending::<#output>())
        }

        #[doc(hidden)]
        #(#cfgs)*
        #[allow(non_camel_case_types, dead_code)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #name {}

        #(#cfgs)*
        #[allow(dead_code)]
        impl #name {
            #vis const PATH: &'static str = #path;

            #vis fn route<#state>() -> #axum::routing::MethodRouter<#state>
            where
                #state: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                #axum::routing::MethodRouter::new()
            }
        }

        #(#cfgs)*
        impl<#state> #krate::handler::WebSocketRoute<#state> for #name
        where
            #state: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
        {
            const PATH: &'static str = #path;

            fn method_router() -> #axum::routing::MethodRouter<#state> {
                #axum::routing::MethodRouter::new()
            }
        }
    }
}
