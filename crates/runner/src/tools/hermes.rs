//! Hermes / Qwen 2.5: each call is `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`;
//! parallel calls repeat the block.

use super::{CallMarkers, CallShape, ToolFormat, ToolFormatKind};

#[derive(Debug, Clone, Copy)]
pub struct Hermes;

impl ToolFormat for Hermes {
    fn kind(&self) -> ToolFormatKind {
        ToolFormatKind::Hermes
    }

    fn name(&self) -> &'static str {
        "hermes"
    }

    fn markers(&self) -> CallMarkers {
        CallMarkers {
            open: "<tool_call>",
            close: "</tool_call>",
            shape: CallShape::OneCallPerBlock,
            name_key: "name",
            args_key: "arguments",
        }
    }
}
