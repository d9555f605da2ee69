//! Reading the attribute and the function: what each argument is, and every mistake found,
//! each pointing at its own token.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Expr, FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments, ReturnType, Signature,
    Token, Type,
};

use crate::path::{self, Template};

/// The settings the attribute takes as options: each is a method of `tachyon::Settings`, and
/// the value is passed to it as written, so the compiler checks its type at the value.
macro_rules! settings {
    ($($key:ident),* $(,)?) => {
        mod kw {
            $(syn::custom_keyword!($key);)*
        }

        /// Parses a setting's key if one comes next.
        fn parse_setting_key(
            lookahead: &syn::parse::Lookahead1<'_>,
            input: ParseStream<'_>,
        ) -> syn::Result<Option<Ident>> {
            $(
                if lookahead.peek(kw::$key) {
                    let key: kw::$key = input.parse()?;
                    return Ok(Some(Ident::new(stringify!($key), key.span)));
                }
            )*
            Ok(None)
        }
    };
}

settings!(
    state,
    read_buffer_size,
    write_buffer_size,
    max_write_buffer_size,
    max_message_size,
    max_frame_size,
    queue_messages,
    queue_bytes,
    close_timeout,
    keepalive_interval,
    keepalive_timeout,
    idle_timeout,
    origins,
    allowed_origins,
    max_connections,
    expose_errors,
    browser_readable_rejections,
    deflate,
);

/// `#[websocket("/path", crate = "path::to::tachyon", max_message_size = 1 << 24, ...)]`.
pub(crate) struct Attribute {
    pub(crate) path: LitStr,
    pub(crate) krate: Option<syn::Path>,
    /// Settings for this handler, in the order written: the key (a `Settings` method) and its
    /// value.
    pub(crate) settings: Vec<(Ident, Expr)>,
    /// `state = T`: the app state the extractor arguments are checked against.
    pub(crate) state: Option<Type>,
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
        let mut krate: Option<syn::Path> = None;
        let mut settings: Vec<(Ident, Expr)> = Vec::new();
        let mut state: Option<Type> = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let lookahead = input.lookahead1();
            if lookahead.peek(Token![crate]) {
                let key: Token![crate] = input.parse()?;
                if krate.is_some() {
                    return Err(syn::Error::new(key.span, "`crate` set multiple times"));
                }
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                krate = Some(value.parse()?);
            } else if let Some(key) = parse_setting_key(&lookahead, input)? {
                if key == "state" {
                    if state.is_some() {
                        return Err(syn::Error::new(key.span(), "`state` set multiple times"));
                    }
                    input.parse::<Token![=]>()?;
                    state = Some(input.parse()?);
                    continue;
                }
                if settings.iter().any(|(existing, _)| *existing == key) {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("`{key}` set multiple times"),
                    ));
                }
                input.parse::<Token![=]>()?;
                settings.push((key, input.parse()?));
            } else {
                return Err(lookahead.error());
            }
        }
        Ok(Self {
            path,
            krate,
            settings,
            state,
        })
    }
}

/// An error about the bytes `at` of the path literal: spanned at them where the compiler can
/// point inside a literal (nightly), and otherwise at the literal, with a caret line under them.
fn path_error(path: &LitStr, error: &path::PathError) -> syn::Error {
    let token = path.token();
    let source = token.to_string();
    // `at` counts bytes of the value; in the source they follow the opening quote (and the `r#`
    // of a raw string). A literal with escapes has no simple mapping: point at all of it.
    let prefix = source.find('"').map_or(0, |quote| quote + 1);
    let value = path.value();
    let mapped = source.get(prefix..prefix + value.len()) == Some(value.as_str());
    if mapped {
        if let Some(span) = token.subspan(prefix + error.at.start..prefix + error.at.end) {
            return syn::Error::new(span, &error.message);
        }
    }
    let caret_from = value[..error.at.start].chars().count();
    let carets = value[error.at.clone()].chars().count().max(1);
    let message = format!(
        "{}\n  \"{value}\"\n   {}{}",
        error.message,
        " ".repeat(caret_from),
        "^".repeat(carets)
    );
    syn::Error::new(path.span(), message)
}

/// What a handler argument is.
pub(crate) enum Role {
    /// The `WebSocket`.
    Socket,
    /// A path parameter, parsed with `FromStr`.
    PathParam(String),
    /// A query parameter declared in the route, parsed with `FromStr`; `Some(inner)` for an
    /// `Option<inner>` argument, which may be missing.
    QueryParam(String, Option<Box<Type>>),
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
            Err(error) => {
                errors.add(path_error(&attribute.path, &error));
                None
            }
        };
        check_signature(&function.sig, &mut errors);

        let params = template
            .as_ref()
            .map_or(&[][..], |template| &template.params[..]);
        let query = template
            .as_ref()
            .map_or(&[][..], |template| &template.query[..]);
        // An axum `Path<T>` argument takes the path parameters itself.
        let path_extractor = function.sig.inputs.iter().any(
            |input| matches!(input, FnArg::Typed(typed) if last_segment_is(&typed.ty, "Path")),
        );
        // Every argument's name, including those rejected for their type, so that one mistake
        // in an argument does not also report its parameter as missing.
        let bound_names: Vec<String> = function
            .sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(typed) => binding_name(&typed.pat),
                FnArg::Receiver(_) => None,
            })
            .collect();
        // The parameters no argument takes (an axum `Path<T>` takes all path parameters).
        let unmatched: Vec<Unmatched<'_>> = params
            .iter()
            .filter(|_| !path_extractor)
            .map(|name| Unmatched { name, query: false })
            .chain(query.iter().map(|name| Unmatched { name, query: true }))
            .filter(|param| !bound_names.iter().any(|bound| bound == param.name))
            .collect();
        let mut arguments = Vec::new();
        let mut socket_seen = false;
        // Whether an argument of a parameter's type names no parameter: it is reported with the
        // parameters left without an argument (most likely the one it was meant for), which then
        // get no error of their own.
        let mut stray_seen = false;
        for input in &function.sig.inputs {
            let FnArg::Typed(typed) = input else {
                errors.push(
                    input.span(),
                    "a #[websocket] handler is a free function: it cannot take `self`",
                );
                continue;
            };
            let ty = &*typed.ty;
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
            } else if let Some(name) = binding_name(&typed.pat).filter(|name| query.contains(name))
            {
                Role::QueryParam(name, option_inner(ty).cloned().map(Box::new))
            } else {
                let scalar = scalar_type(ty).filter(|_| template.is_some());
                if let (Some(name), Some(scalar)) = (binding_name(&typed.pat), scalar) {
                    let route = attribute.path.value();
                    let message = if unmatched.is_empty() {
                        not_a_param(&name, &scalar, &route, params, query)
                    } else {
                        misnamed(&name, &scalar, &route, &unmatched)
                    };
                    errors.push(typed.pat.span(), message);
                    stray_seen = true;
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
        if let Some(template) = template.as_ref().filter(|_| !stray_seen) {
            for param in &unmatched {
                let name = param.name;
                let message = if param.query {
                    format!(
                        "query parameter `{name}` has no argument: add `{name}: Option<String>` \
                         (optional) or `{name}: String` (required), or any `FromStr` type, to the \
                         handler"
                    )
                } else {
                    format!(
                        "path parameter `{name}` has no argument: add `{name}: String` (or any \
                         `FromStr` type) to the handler, or take all path parameters with axum's \
                         `Path<T>`"
                    )
                };
                let at = template
                    .declaration_of(name)
                    .unwrap_or(0..attribute.path.value().len());
                errors.add(path_error(
                    &attribute.path,
                    &path::PathError { message, at },
                ));
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

fn not_a_param(
    name: &str,
    scalar: &str,
    path: &str,
    params: &[String],
    query: &[String],
) -> String {
    let all: Vec<String> = params
        .iter()
        .chain(query)
        .map(|param| format!("`{param}`"))
        .collect();
    let known = if all.is_empty() {
        format!("\"{path}\" declares no parameters")
    } else {
        format!("the parameters of \"{path}\" are {}", all.join(", "))
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    format!(
        "argument `{name}: {scalar}` is not a parameter of the route ({known}): rename it to \
         match one, or declare it as a query parameter: `#[websocket(\"{path}{separator}<{name}>\")]`"
    )
}

/// A parameter of the route that no argument takes.
struct Unmatched<'a> {
    name: &'a str,
    /// A query parameter (declared after `?`), not a path parameter.
    query: bool,
}

impl std::fmt::Display for Unmatched<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.query { "query" } else { "path" };
        write!(f, "{kind} parameter `{}`", self.name)
    }
}

/// An argument of a parameter's type that names no parameter, while some parameters have no
/// argument: most likely it is one of them, misnamed.
fn misnamed(name: &str, scalar: &str, path: &str, unmatched: &[Unmatched<'_>]) -> String {
    match unmatched {
        [param] => format!(
            "argument `{name}: {scalar}` is not a parameter of the route, and {param} of \
             \"{path}\" has no argument: did you mean `{wanted}`? Rename the argument to \
             `{wanted}`",
            wanted = param.name,
        ),
        _ => {
            let names: Vec<String> = unmatched
                .iter()
                .map(|param| format!("`{}`", param.name))
                .collect();
            format!(
                "argument `{name}: {scalar}` is not a parameter of the route, and the parameters \
                 {} of \"{path}\" have no argument: rename the argument to the one it is for \
                 (each parameter needs an argument of its name)",
                names.join(", ")
            )
        }
    }
}

/// Whether `ty`'s last path segment is `name` (`Path`, `axum::extract::Path`...).
fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == name),
        Type::Group(inner) => last_segment_is(&inner.elem, name),
        Type::Paren(inner) => last_segment_is(&inner.elem, name),
        _ => false,
    }
}

/// The `T` of a `State<T>` argument.
pub(crate) fn state_inner(ty: &Type) -> Option<&Type> {
    wrapped(ty, "State")
}

/// The `T` of an `Option<T>` argument.
fn option_inner(ty: &Type) -> Option<&Type> {
    wrapped(ty, "Option")
}

/// The `T` of a `wrapper<T>` type (by its last path segment).
fn wrapped<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if path.qself.is_some() || last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.first()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of every error `#[websocket(attribute)]` on `function` gives.
    fn errors(attribute: &str, function: &str) -> Vec<String> {
        let attribute: Attribute = syn::parse_str(attribute).expect("attribute");
        let function: ItemFn = syn::parse_str(function).expect("function");
        match Handler::new(&attribute, function) {
            Ok(_) => Vec::new(),
            Err(error) => error.into_iter().map(|error| error.to_string()).collect(),
        }
    }

    #[test]
    fn a_misnamed_argument_is_one_error_naming_the_parameter() {
        let found = errors(
            r#""/chat/{room}""#,
            "async fn chat(mut ws: WebSocket, room_name: String) {}",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("argument `room_name: String`"),
            "{found:?}"
        );
        assert!(found[0].contains("did you mean `room`?"), "{found:?}");

        let found = errors(
            r#""/ws?<token>""#,
            "async fn chat(mut ws: WebSocket, tok: Option<String>) {}",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("query parameter `token`"), "{found:?}");
    }

    #[test]
    fn several_parameters_without_an_argument_are_listed_on_the_stray_one() {
        let found = errors(
            r#""/ws/{room}/{seat}""#,
            "async fn chat(mut ws: WebSocket, place: u32) {}",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`room`, `seat`"), "{found:?}");
    }

    #[test]
    fn a_parameter_without_any_stray_argument_still_gets_its_error() {
        let found = errors(
            r#""/ws/{room}?<token>""#,
            "async fn chat(mut ws: WebSocket) {}",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("path parameter `room` has no argument"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("query parameter `token` has no argument"),
            "{found:?}"
        );
        // An argument that names no parameter, when every parameter has one, is still reported.
        let found = errors(
            r#""/ws/{room}""#,
            "async fn chat(mut ws: WebSocket, room: String, seat: u32) {}",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("declare it as a query parameter"),
            "{found:?}"
        );
        // `Path<T>` takes the path parameters, so a stray argument has none to be.
        let found = errors(
            r#""/ws/{room}""#,
            "async fn chat(mut ws: WebSocket, Path(p): Path<String>, seat: u32) {}",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].contains("did you mean"), "{found:?}");
    }
}
