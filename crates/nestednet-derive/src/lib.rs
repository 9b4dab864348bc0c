//! `#[derive(NestedNetwork)]`: a nested network's bookkeeping from its fields, so that what a
//! user writes is what only the user knows: the layers, their widths per level (in the
//! configuration) and the forward pass.
//!
//! ```ignore
//! #[derive(Module, Debug, NestedNetwork)]
//! #[nested(input = Tensor<4>, output = Tensor<2>, forward = Self::forward, side_by_side)]
//! pub struct TinyNet {
//!     conv1: NestedConv2d,
//!     bn1: LevelBatchNorm,
//!     fc: NestedLinear,
//!     #[nested(input_shape)]
//!     input_shape: [usize; 3],
//! }
//!
//! impl TinyNet {
//!     fn forward(&self, images: Tensor<4>, level: usize) -> Tensor<2> { /* ... */ }
//! }
//! ```
//!
//! It implements `nestednet::models::NestedNetwork` with `Level = Self`:
//!
//! - every field is a nested layer (`nestednet::nn::NestedLayer`: `NestedLinear`,
//!   `NestedConv2d`, `LevelConv2d`, `LevelBatchNorm`, `NestedHead`, the transformer layers, or a
//!   user's own), except the
//!   one marked `#[nested(input_shape)]` (what `input_shape()` returns) and those marked
//!   `#[nested(shared)]` (anything else: one copy serves every level, cloned into an extracted
//!   level, e.g. a plain Burn `Embedding`);
//! - `num_levels` is the first nested layer's; `extract_level(k)` takes every nested layer's
//!   level `k` (`NestedLayer::layer_for_level`); `weight_layers` (and `_mut`) list, in field
//!   order, every weight that can carry a mask (`NestedLayer::layer_weights`), named `field`
//!   or `field.part` for a composite layer (`attention.query`, `blocks.3.feed_forward.inner`),
//!   so that weight masks can be learned on the network; `level_uses_layer` asks the field
//!   (`NestedLayer::layer_runs`: a depth-nested stack skips blocks); `level_widths` lists every
//!   layer's output width;
//! - `forward_level` calls the `forward` function the attribute names
//!   (`fn(&Self, Input, usize) -> Output`); `side_by_side` says the levels share no state a
//!   forward pass writes (each has its own batch norms), so the trainer may run them on two
//!   threads at once.
//!
//! Costs and classes are measured by the probe, as for any network. Any other method of
//! `NestedNetwork` (Mix'n'Match, nestify, export names) needs a hand-written implementation.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Data, DeriveInput, Error, Fields, Ident, Path, Token, Type, parse_macro_input};

/// Derives `nestednet::models::NestedNetwork` (see the crate's documentation).
#[proc_macro_derive(NestedNetwork, attributes(nested))]
pub fn derive_nested_network(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(Error::into_compile_error).into()
}

/// The struct's `#[nested(...)]` attribute.
struct NetworkAttr {
    input: Type,
    output: Type,
    forward: Path,
    side_by_side: bool,
}

impl Parse for NetworkAttr {
    fn parse(stream: ParseStream<'_>) -> syn::Result<Self> {
        let (mut input, mut output, mut forward, mut side_by_side) = (None, None, None, false);
        while !stream.is_empty() {
            let key: Ident = stream.parse()?;
            match key.to_string().as_str() {
                "side_by_side" => side_by_side = true,
                "input" | "output" | "forward" => {
                    stream.parse::<Token![=]>()?;
                    match key.to_string().as_str() {
                        "input" => input = Some(stream.parse::<Type>()?),
                        "output" => output = Some(stream.parse::<Type>()?),
                        _ => forward = Some(stream.parse::<Path>()?),
                    }
                }
                other => {
                    return Err(Error::new(
                        key.span(),
                        format!("unknown `nested` key `{other}` (input, output, forward, side_by_side)"),
                    ));
                }
            }
            if !stream.is_empty() {
                stream.parse::<Token![,]>()?;
            }
        }
        let missing = |what: &str| Error::new(stream.span(), format!("#[nested(...)] needs `{what} = ...`"));
        Ok(Self {
            input: input.ok_or_else(|| missing("input"))?,
            output: output.ok_or_else(|| missing("output"))?,
            forward: forward.ok_or_else(|| missing("forward"))?,
            side_by_side,
        })
    }
}

/// What a field is to the network.
#[derive(PartialEq)]
enum FieldKind {
    /// A nested layer (`NestedLayer`).
    Layer,
    /// The input shape `input_shape()` returns.
    InputShape,
    /// Shared by every level: cloned into an extracted level.
    Shared,
}

fn field_kind(field: &syn::Field) -> syn::Result<FieldKind> {
    let mut kind = FieldKind::Layer;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("nested")) {
        let word: Ident = attr.parse_args()?;
        kind = match word.to_string().as_str() {
            "input_shape" => FieldKind::InputShape,
            "shared" => FieldKind::Shared,
            other => {
                return Err(Error::new(
                    word.span(),
                    format!("unknown field attribute `nested({other})` (input_shape, shared)"),
                ));
            }
        };
    }
    Ok(kind)
}

/// The struct's `#[nested(...)]` attribute.
fn network_attr(input: &DeriveInput) -> syn::Result<NetworkAttr> {
    input
        .attrs
        .iter()
        .find(|a| a.path().is_ident("nested"))
        .ok_or_else(|| {
            Error::new(
                input.ident.span(),
                "#[derive(NestedNetwork)] needs #[nested(input = ..., output = ..., forward = ...)]",
            )
        })?
        .parse_args::<NetworkAttr>()
}

/// The struct's fields, sorted by what they are to the network.
struct NetworkFields {
    /// The nested layers, in declaration order.
    layers: Vec<Ident>,
    /// The field initialisers of an extracted level.
    extracted: Vec<Tokens>,
    /// The input shape's field.
    shape: Ident,
}

fn network_fields(input: &DeriveInput) -> syn::Result<NetworkFields> {
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(Error::new(name.span(), "#[derive(NestedNetwork)] works on structs"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(Error::new(name.span(), "#[derive(NestedNetwork)] needs named fields"));
    };
    let mut layers = Vec::new();
    let mut extracted = Vec::new();
    let mut shape = None;
    for field in &fields.named {
        let Some(ident) = field.ident.clone() else { continue };
        match field_kind(field)? {
            FieldKind::Layer => {
                extracted.push(
                    quote! { #ident: ::nestednet::nn::NestedLayer::layer_for_level(&self.#ident, level) },
                );
                layers.push(ident);
            }
            FieldKind::InputShape => {
                extracted.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) });
                shape = Some(ident);
            }
            FieldKind::Shared => extracted.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) }),
        }
    }
    if layers.is_empty() {
        return Err(Error::new(name.span(), "a nested network needs a nested layer"));
    }
    let shape = shape
        .ok_or_else(|| Error::new(name.span(), "mark the input shape's field #[nested(input_shape)]"))?;
    Ok(NetworkFields { layers, extracted, shape })
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    let NetworkAttr { input: input_type, output, forward, side_by_side } = network_attr(input)?;
    let NetworkFields { layers, extracted, shape } = network_fields(input)?;
    let first = &layers[0];
    let names: Vec<String> = layers.iter().map(ToString::to_string).collect();
    let (generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #generics ::nestednet::models::NestedNetwork for #name #ty_generics #where_clause {
            type Level = Self;
            type Input = #input_type;
            type Output = #output;

            fn num_levels(&self) -> usize {
                ::nestednet::nn::NestedLayer::layer_levels(&self.#first)
            }

            fn forward_level(&self, input: Self::Input, level: usize) -> Self::Output {
                #forward(self, input, level)
            }

            fn input_shape(&self) -> ::nestednet::models::InputShape<Self> {
                ::core::clone::Clone::clone(&self.#shape)
            }

            fn extract_level(&self, level: usize) -> Self {
                Self { #(#extracted,)* }
            }

            fn levels_train_side_by_side(&self) -> bool {
                #side_by_side
            }

            fn level_widths(&self, level: usize) -> ::std::vec::Vec<(::std::string::String, usize)> {
                let mut widths = ::std::vec::Vec::new();
                #(
                    if let ::core::option::Option::Some(w) = ::nestednet::nn::NestedLayer::layer_width(&self.#layers, level) {
                        widths.push((#names.to_string(), w));
                    }
                )*
                widths
            }

            fn weight_layers(&self) -> ::std::vec::Vec<(::std::string::String, &dyn ::nestednet::nn::Maskable)> {
                let mut out: ::std::vec::Vec<(::std::string::String, &dyn ::nestednet::nn::Maskable)> = ::std::vec::Vec::new();
                #(
                    for (part, m) in ::nestednet::nn::NestedLayer::layer_weights(&self.#layers) {
                        out.push((::nestednet::nn::weight_name(#names, &part), m));
                    }
                )*
                out
            }

            fn weight_layers_mut(&mut self) -> ::std::vec::Vec<(::std::string::String, &mut dyn ::nestednet::nn::Maskable)> {
                let mut out: ::std::vec::Vec<(::std::string::String, &mut dyn ::nestednet::nn::Maskable)> = ::std::vec::Vec::new();
                #(
                    for (part, m) in ::nestednet::nn::NestedLayer::layer_weights_mut(&mut self.#layers) {
                        out.push((::nestednet::nn::weight_name(#names, &part), m));
                    }
                )*
                out
            }

            fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
                #(
                    if let ::core::option::Option::Some(part) = ::nestednet::nn::weight_name_under(layer, #names) {
                        return ::nestednet::nn::NestedLayer::layer_runs(&self.#layers, part, level);
                    }
                )*
                true
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn error_of(input: DeriveInput) -> String {
        match expand(&input) {
            Ok(tokens) => panic!("expanded: {tokens}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_network_s_layers_are_its_unmarked_fields_in_order() {
        let input: DeriveInput = parse_quote! {
            #[nested(input = Tensor<4>, output = Tensor<2>, forward = Self::forward)]
            struct Net {
                conv: NestedConv2d,
                #[nested(shared)]
                embed: Embedding,
                fc: NestedLinear,
                #[nested(input_shape)]
                shape: [usize; 3],
            }
        };
        let code = expand(&input).unwrap().to_string().replace(' ', "");
        // Levels counted by the first layer, every layer listed under its field's name (and no
        // other field), the attribute's types and forward function used, no side-by-side.
        assert!(code.contains("NestedLayer::layer_levels(&self.conv)"), "{code}");
        assert!(code.contains("\"conv\".to_string()") && code.contains("\"fc\".to_string()"), "{code}");
        assert!(!code.contains("\"embed\"") && !code.contains("\"shape\""), "{code}");
        assert!(code.contains("embed:::core::clone::Clone::clone(&self.embed)"), "{code}");
        assert!(code.contains("typeInput=Tensor<4>;") && code.contains("typeOutput=Tensor<2>;"), "{code}");
        assert!(code.contains("Self::forward(self,input,level)"), "{code}");
        // Weights named `field.part`, each level's use of one asked of its field.
        assert!(code.contains("weight_name(\"conv\",&part)"), "{code}");
        assert!(code.contains("weight_name_under(layer,\"fc\")"), "{code}");
        assert!(code.contains("NestedLayer::layer_runs(&self.fc,part,level)"), "{code}");
        assert!(code.contains("fnlevels_train_side_by_side(&self)->bool{false}"), "{code}");
        let conv = code.find("\"conv\"").unwrap();
        assert!(conv < code.find("\"fc\"").unwrap(), "field order kept");
    }

    #[test]
    fn side_by_side_is_said_by_its_key() {
        let input: DeriveInput = parse_quote! {
            #[nested(input = Tensor<4>, output = Tensor<2>, forward = Self::forward, side_by_side)]
            struct Net { fc: NestedLinear, #[nested(input_shape)] shape: [usize; 3] }
        };
        let code = expand(&input).unwrap().to_string().replace(' ', "");
        assert!(code.contains("fnlevels_train_side_by_side(&self)->bool{true}"), "{code}");
    }

    #[test]
    fn a_wrong_declaration_is_named() {
        let cases: [(DeriveInput, &str); 7] = [
            (parse_quote! { struct Net { fc: NestedLinear } }, "needs #[nested(input = ..."),
            (
                parse_quote! { #[nested(input = Tensor<4>, forward = f)] struct Net { fc: NestedLinear } },
                "needs `output = ...`",
            ),
            (
                parse_quote! { #[nested(input = A, output = B, forward = f, speed = 3)] struct Net { fc: L } },
                "unknown `nested` key `speed`",
            ),
            (
                parse_quote! { #[nested(input = A, output = B, forward = f)] struct Net { fc: L } },
                "mark the input shape's field #[nested(input_shape)]",
            ),
            (
                parse_quote! {
                    #[nested(input = A, output = B, forward = f)]
                    struct Net { #[nested(input_shape)] shape: [usize; 3] }
                },
                "a nested network needs a nested layer",
            ),
            (
                parse_quote! {
                    #[nested(input = A, output = B, forward = f)]
                    struct Net { #[nested(frozen)] fc: L, #[nested(input_shape)] s: S }
                },
                "unknown field attribute `nested(frozen)`",
            ),
            (
                parse_quote! { #[nested(input = A, output = B, forward = f)] struct Net(L, S); },
                "needs named fields",
            ),
        ];
        for (input, expected) in cases {
            let error = error_of(input);
            assert!(error.contains(expected), "{error:?} should say {expected:?}");
        }
    }
}
