//! Reading the attribute and the function: what each argument is, and every mistake found,
//! each pointing at its own token.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, ItemFn, LitStr, Pat, PathArguments, ReturnType, Signature, Token, Type,
};

use crate::path::{self, Template};

/// `#[websocket("/path", crate = "path::to::tachyon")]`.
pub(crate) struct Attribute {
    pub(crate) path: LitStr,
    pub(crate) krate: Option<syn::Path>,
}

impl Parse for Attribute {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(
                input.error("#[websocket] needs the route's path: write #[websocket(\"/ws\")]")
            );
        }
        let path: LitStr = input.parse().map_err(|error| {
            syn::Error::new(
                error.span(),
                "expected the route's path as a string: #[websocket(\"/ws\")]",
            )
        })?;
        let mut krate = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: syn::Ident = input.call(syn::ext::IdentExt::parse_any)?;
            if key != "crate" {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown option `{key}`: the only option is `crate = \"path::to::tachyon\"`"
                    ),
                ));
            }
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            krate = Some(value.parse()?);
        }
        Ok(Self { path, krate })
    }
}

/// What a handler argument is.
pub(crate) enum Role {
    /// The `WebSocket`.
    Socket,
    /// A path parameter, parsed with `FromStr`.
    PathParam(String),
    /// An axum extractor.
    Extractor,
}

pub(crate) struct Argument {
    pub(crate) ty: Type,
    pub(crate) role: Role,
}

/// A checked handler.
pub(crate) struct Handler {
    pub(crate) function: ItemFn,
    pub(crate) template: Template,
    pub(crate) arguments: Vec<Argument>,
}

impl Handler {
    /// Checks the function against the path; collects every mistake.
    pub(crate) fn new(attribute: &Attribute, function: ItemFn) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let template = match path::parse(&attribute.path.value()) {
            Ok(template) => Some(template),
            Err(message) => {
                errors.push(attribute.path.span(), message);
                None
            }
        };
        check_signature(&function.sig, &mut errors);

        let params = template
            .as_ref()
            .map_or(&[][..], |template| &template.params[..]);
        let mut arguments = Vec::new();
        let mut socket_seen = false;
        // Every argument's name, including those rejected for their type, so that one mistake
        // in an argument does not also report its parameter as missing.
        let mut bound_names: Vec<String> = Vec::new();
        for input in &function.sig.inputs {
            let FnArg::Typed(typed) = input else {
                errors.push(
                    input.span(),
                    "a #[websocket] handler is a free function: it cannot take `self`",
                );
                continue;
            };
            let ty = &*typed.ty;
            bound_names.extend(binding_name(&typed.pat));
            if let Some(problem) = unsupported_type(ty) {
                errors.push_spanned(ty, problem(&argument_name(&typed.pat)));
                continue;
            }
            let role = if is_websocket(ty) {
                if socket_seen {
                    errors.push_spanned(
                        typed,
                        "a #[websocket] handler takes one `WebSocket`; remove this one",
                    );
                    continue;
                }
                socket_seen = true;
                Role::Socket
            } else if let Some(name) = binding_name(&typed.pat).filter(|name| params.contains(name))
            {
                Role::PathParam(name)
            } else {
                let scalar = scalar_type(ty).filter(|_| template.is_some());
                if let (Some(name), Some(scalar)) = (binding_name(&typed.pat), scalar) {
                    errors.push(
                        typed.pat.span(),
                        not_a_param(&name, &scalar, &attribute.path.value(), params),
                    );
                    continue;
                }
                Role::Extractor
            };
            arguments.push(Argument {
                ty: ty.clone(),
                role,
            });
        }
        if !socket_seen
            && function
                .sig
                .inputs
                .iter()
                .all(|input| matches!(input, FnArg::Typed(_)))
        {
            errors.push(
                function.sig.paren_token.span.join(),
                "a #[websocket] handler takes the connection as an argument: add `mut ws: WebSocket` \
                 (tachyon::WebSocket)",
            );
        }
        for param in params {
            if !bound_names.contains(param) {
                errors.push(
                    attribute.path.span(),
                    format!(
                        "path parameter `{param}` has no argument: add `{param}: String` (or any \
                         `FromStr` type) to the handler"
                    ),
                );
            }
        }
        errors.finish()?;
        // A path that did not parse has pushed its error, so `finish` has returned already.
        let template = template
            .ok_or_else(|| syn::Error::new(attribute.path.span(), "invalid WebSocket path"))?;
        Ok(Self {
            function,
            template,
            arguments,
        })
    }
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            "a #[websocket] handler must be an `async fn`: write `async fn`",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.push(constness.span, "a #[websocket] handler cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(unsafety.span, "a #[websocket] handler cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi.span(),
            "a #[websocket] handler cannot have an `extern` ABI",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push_spanned(
            &sig.generics,
            "a #[websocket] handler cannot be generic: each route needs concrete argument types \
             (for shared state, take `State<YourState>`)",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic.span(), "a #[websocket] handler cannot be variadic");
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if matches!(**ty, Type::ImplTrait(_)) {
            errors.push_spanned(
                ty,
                "a #[websocket] handler returns `()` or `Result<(), E>`, not `impl Trait`",
            );
        }
    }
}

/// Argument types that can never work, with the message explaining why.
fn unsupported_type(ty: &Type) -> Option<fn(&str) -> String> {
    match ty {
        Type::Reference(_) => Some(|name| {
            format!(
                "argument `{name}` is a reference: handler arguments are owned, since the handler \
                 outlives the request (take `String` rather than `&str`, `State<T>` rather than `&T`)"
            )
        }),
        Type::ImplTrait(_) => Some(|name| {
            format!("argument `{name}` is `impl Trait`: a #[websocket] handler cannot be generic")
        }),
        Type::Paren(inner) => unsupported_type(&inner.elem),
        Type::Group(inner) => unsupported_type(&inner.elem),
        _ => None,
    }
}

fn is_websocket(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "WebSocket" && last.arguments.is_empty()),
        Type::Group(inner) => is_websocket(&inner.elem),
        _ => false,
    }
}

const SCALARS: &[&str] = &[
    "String",
    "bool",
    "char",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "usize",
    "i8",
    "i16",
    "i32",
    "i64",
    "i128",
    "isize",
    "f32",
    "f64",
    "NonZeroU8",
    "NonZeroU16",
    "NonZeroU32",
    "NonZeroU64",
    "NonZeroU128",
    "NonZeroUsize",
    "NonZeroI8",
    "NonZeroI16",
    "NonZeroI32",
    "NonZeroI64",
    "NonZeroI128",
    "NonZeroIsize",
    "IpAddr",
    "Ipv4Addr",
    "Ipv6Addr",
    "SocketAddr",
];

/// `String`, a number, `bool`, `char` or an address (or an `Option` of one): std types that are
/// no extractor, so an argument of such a type must be a path parameter. Returns how it is
/// written. Other types cannot be told apart here; the route's `FromRequestParts` bound catches
/// them.
fn scalar_type(ty: &Type) -> Option<String> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.arguments.is_empty() && SCALARS.iter().any(|scalar| last.ident == scalar) {
        return Some(last.ident.to_string());
    }
    if last.ident == "Option" {
        if let PathArguments::AngleBracketed(arguments) = &last.arguments {
            if let Some(GenericArgument::Type(inner)) = arguments.args.first() {
                return scalar_type(inner).map(|inner| format!("Option<{inner}>"));
            }
        }
    }
    None
}

fn not_a_param(name: &str, scalar: &str, path: &str, params: &[String]) -> String {
    let known = if params.is_empty() {
        format!("\"{path}\" has no path parameters")
    } else {
        let list: Vec<String> = params.iter().map(|param| format!("`{param}`")).collect();
        format!("the parameters of \"{path}\" are {}", list.join(", "))
    };
    format!(
        "argument `{name}: {scalar}` is not a path parameter ({known}): rename it to match one, \
         or take the value through an extractor (`Query<T>` for the query string)"
    )
}

/// The name an argument binds, if its pattern is a plain identifier.
fn binding_name(pat: &Pat) -> Option<String> {
    match pat {
        // `r#type` binds the parameter `{type}`.
        Pat::Ident(ident) if ident.subpat.is_none() => Some(ident.ident.unraw().to_string()),
        _ => None,
    }
}

fn argument_name(pat: &Pat) -> String {
    binding_name(pat).unwrap_or_else(|| quote::quote!(#pat).to_string())
}

/// Every mistake found, combined into one error.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.add(syn::Error::new(span, message));
    }

    /// An error covering all of `tokens`, not only their first token.
    fn push_spanned(&mut self, tokens: &dyn quote::ToTokens, message: impl std::fmt::Display) {
        self.add(syn::Error::new_spanned(tokens, message));
    }

    fn add(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
