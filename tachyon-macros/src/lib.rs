//! The `#[websocket]` attribute of [Tachyon](https://docs.rs/tachyon-ws). Depend on `tachyon-ws`, which
//! re-exports it and documents it; the generated code calls `tachyon` only.

use proc_macro::TokenStream;

mod expand;
mod parse;
mod path;

/// Turns an `async fn` into a Tachyon WebSocket handler. Documented in `tachyon`, which
/// re-exports it.
#[proc_macro_attribute]
pub fn websocket(attribute: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(error) => {
            let message =
                syn::Error::new(error.span(), "#[websocket] goes on an `async fn` handler");
            let mut output = message.to_compile_error();
            output.extend(proc_macro2::TokenStream::from(item));
            return output.into();
        }
    };
    let attribute = syn::parse::<parse::Attribute>(attribute);
    let expanded = attribute
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|attribute| expand::expand(attribute, function.clone()));
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // Keep the function and its route items (as stubs), so that the one mistake is the
            // only error: `Tachyon::websocket(name)` and `name::PATH` still compile.
            let mut output = error.to_compile_error();
            output.extend(expand::stub(attribute.ok().as_ref(), &function));
            output.into()
        }
    }
}
