//! Cohere Command R7B / A: the plan sits in `<|START_THINKING|>..<|END_THINKING|>`, the calls in
//! `<|START_ACTION|>[{"tool_call_id": "0", "tool_name": .., "parameters": {..}}]<|END_ACTION|>`,
//! and a direct answer in `<|START_RESPONSE|>..<|END_RESPONSE|>` (R7B, Command A) or
//! `<|START_TEXT|>..<|END_TEXT|>` (Command 4's templates).

use super::{CallMarkers, CallShape, Section, SectionKind, ToolFormat, ToolFormatKind};

const SECTIONS: &[Section] = &[
    Section {
        open: "<|START_THINKING|>",
        close: "<|END_THINKING|>",
        kind: SectionKind::Plan,
    },
    Section {
        open: "<|START_RESPONSE|>",
        close: "<|END_RESPONSE|>",
        kind: SectionKind::Content,
    },
    Section {
        open: "<|START_TEXT|>",
        close: "<|END_TEXT|>",
        kind: SectionKind::Content,
    },
];

#[derive(Debug, Clone, Copy)]
pub struct Command;

impl ToolFormat for Command {
    fn kind(&self) -> ToolFormatKind {
        ToolFormatKind::Command
    }

    fn name(&self) -> &'static str {
        "command"
    }

    fn markers(&self) -> CallMarkers {
        CallMarkers {
            open: "<|START_ACTION|>",
            close: "<|END_ACTION|>",
            shape: CallShape::ArrayOfCalls,
            name_key: "tool_name",
            args_key: "parameters",
        }
    }

    fn sections(&self) -> &'static [Section] {
        SECTIONS
    }

    fn wraps_every_reply(&self) -> bool {
        true
    }

    fn cites_natively(&self) -> bool {
        true
    }
}
