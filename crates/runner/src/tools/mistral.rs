//! Mistral (v3 tokenizers and later templates): `[TOOL_CALLS][{"name": .., "arguments": {..}},
//! ..]` up to the end of the turn.

use super::{CallMarkers, CallShape, ToolFormat, ToolFormatKind};

#[derive(Debug, Clone, Copy)]
pub struct Mistral;

impl ToolFormat for Mistral {
    fn kind(&self) -> ToolFormatKind {
        ToolFormatKind::Mistral
    }

    fn name(&self) -> &'static str {
        "mistral"
    }

    fn markers(&self) -> CallMarkers {
        CallMarkers {
            open: "[TOOL_CALLS]",
            close: "",
            shape: CallShape::ArrayOfCalls,
            name_key: "name",
            args_key: "arguments",
        }
    }
}
