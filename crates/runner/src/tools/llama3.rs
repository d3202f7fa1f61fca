//! Llama 3.1 and later with JSON tool calling: the whole reply is `{"name": .., "parameters":
//! {..}}` (optionally after `<|python_tag|>`); several calls are separated by `;` or whitespace.
//! There is no opening marker, so no plan text can precede a call: a reply that does not start
//! with `{` is an answer.

use super::{CallMarkers, CallShape, ToolFormat, ToolFormatKind};

#[derive(Debug, Clone, Copy)]
pub struct Llama3;

impl ToolFormat for Llama3 {
    fn kind(&self) -> ToolFormatKind {
        ToolFormatKind::Llama3
    }

    fn name(&self) -> &'static str {
        "llama3"
    }

    fn markers(&self) -> CallMarkers {
        CallMarkers {
            open: "",
            close: "",
            shape: CallShape::OneCallPerBlock,
            name_key: "name",
            args_key: "parameters",
        }
    }

    fn strip(&self) -> &'static [&'static str] {
        &["<|python_tag|>"]
    }
}
