//! Folds a reply's events (assembled by `runner::reply`) into the non-stream `POST /v2/chat`
//! response; the SSE encoder (`sse.rs`) maps the same events to frames.

use runner::reply::{BlockKind, ReplyEnd, ReplyEvent};

use crate::error::ApiError;
use crate::wire::{
    ChatResponse, CitationOut, FinishReason, LogprobItem, ResponseContent, ResponseMessage,
    ToolCallOut, Usage,
};

/// The response being built from one reply's events.
#[derive(Debug)]
pub struct ResponseFold {
    content: Vec<ResponseContent>,
    plan: String,
    calls: Vec<ToolCallOut>,
    citations: Vec<CitationOut>,
    logprobs: Option<Vec<LogprobItem>>,
}

impl ResponseFold {
    /// `logprobs`: whether the response lists each piece's tokens and log-probabilities.
    pub fn new(logprobs: bool) -> Self {
        Self {
            content: Vec::new(),
            plan: String::new(),
            calls: Vec::new(),
            citations: Vec::new(),
            logprobs: logprobs.then(Vec::new),
        }
    }

    /// Takes one event; returns the reply's end when it comes.
    pub fn push(&mut self, event: ReplyEvent) -> Option<ReplyEnd> {
        match event {
            ReplyEvent::ContentStart { kind, .. } => self.content.push(empty_block(kind)),
            ReplyEvent::ContentDelta {
                index,
                text,
                token_ids,
                logprobs,
            } => {
                if let Some(items) = &mut self.logprobs {
                    items.push(LogprobItem {
                        text: text.clone(),
                        token_ids,
                        logprobs,
                    });
                }
                match self.content.get_mut(index) {
                    Some(ResponseContent::Text { text: block }) => block.push_str(&text),
                    Some(ResponseContent::Thinking { thinking }) => thinking.push_str(&text),
                    None => {}
                }
            }
            ReplyEvent::ContentEnd { .. } => {}
            ReplyEvent::PlanDelta { text } => self.plan.push_str(&text),
            ReplyEvent::ToolCallStart { id, name, .. } => {
                self.calls.push(ToolCallOut::function(id, name))
            }
            ReplyEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = self.calls.get_mut(index) {
                    call.function.arguments.push_str(&arguments);
                }
            }
            ReplyEvent::ToolCallEnd { .. } => {}
            ReplyEvent::Citation { citation, .. } => self.citations.push(citation.into()),
            ReplyEvent::End(end) => return Some(end),
        }
        None
    }

    /// The response for a reply that ended with `end`, or the error it failed with (nothing was
    /// sent yet, so a failure still gets its HTTP status).
    pub fn finish(self, id: String, end: ReplyEnd) -> Result<ChatResponse, ApiError> {
        if let Some(error) = end.error {
            return Err(error.into());
        }
        let message = ResponseMessage {
            role: "assistant".into(),
            content: self.content,
            tool_plan: (!self.plan.is_empty()).then_some(self.plan),
            tool_calls: (!self.calls.is_empty()).then_some(self.calls),
            citations: (!self.citations.is_empty()).then_some(self.citations),
        };
        Ok(ChatResponse {
            id,
            finish_reason: FinishReason::from(end.finish),
            message,
            usage: Usage::from(end.usage),
            logprobs: self.logprobs,
        })
    }
}

/// A content block of `kind` with nothing in it yet (the JSON reply's and `content-start`'s).
pub(crate) fn empty_block(kind: BlockKind) -> ResponseContent {
    match kind {
        BlockKind::Text => ResponseContent::Text {
            text: String::new(),
        },
        BlockKind::Thinking => ResponseContent::Thinking {
            thinking: String::new(),
        },
    }
}
