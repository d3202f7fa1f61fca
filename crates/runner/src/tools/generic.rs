//! cohost's own format for models whose template does not render tools: optional plan text,
//! then `<tool_calls>`, a JSON array of `{"name", "arguments"}` objects, `</tool_calls>`, and the
//! end of the turn. The system turn describes it ([`super::tool_section`]).

use super::{CallMarkers, CallShape, ToolFormat, ToolFormatKind};

pub const OPEN: &str = "<tool_calls>";
pub const CLOSE: &str = "</tool_calls>";

#[derive(Debug, Clone, Copy)]
pub struct Generic;

impl ToolFormat for Generic {
    fn kind(&self) -> ToolFormatKind {
        ToolFormatKind::Generic
    }

    fn name(&self) -> &'static str {
        "generic"
    }

    fn markers(&self) -> CallMarkers {
        CallMarkers {
            open: OPEN,
            close: CLOSE,
            shape: CallShape::ArrayOfCalls,
            name_key: "name",
            args_key: "arguments",
        }
    }
}
