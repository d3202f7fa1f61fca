//! The engine as the scorer of ACCURATE citations (`grounding::accurate`): the reply is
//! teacher-forced after each source's text and after nothing, all passes submitted at once so
//! the engine batches them, and each source's gain per sentence is the difference of the mean
//! log-probabilities of the sentence's tokens.

use std::ops::Range;
use std::sync::Arc;

use super::{EngineHandle, GenerateRequest, StreamEvent};
use crate::grounding::accurate::{sentence_means, Attributor, Gains, GainsFuture};
use crate::grounding::Source;

/// What comes before the reply when it is scored after a source, and after nothing.
const WITH_SOURCE: (&str, &str) = ("Document:\n", "\n\nAnswer:\n");
const WITHOUT: &str = "Answer:\n";

impl Attributor for EngineHandle {
    fn gains(
        &self,
        text: String,
        sentences: Vec<Range<usize>>,
        sources: Arc<[Source]>,
    ) -> GainsFuture {
        let engine = self.clone();
        Box::pin(async move {
            let encoding = engine
                .shared
                .tokenizer
                .tokenizer
                .encode(text.as_str(), false)
                .map_err(|e| e.to_string())?;
            let ids = encoding.get_ids().to_vec();
            let offsets = encoding.get_offsets().to_vec();
            if ids.is_empty() {
                return Ok(vec![vec![0.0; sentences.len()]; sources.len()]);
            }
            // Room for the reply, and for a source cut to fit the context.
            let context = engine.config().context_length;
            let room = context.saturating_sub(ids.len() + 16);
            let mut prompts = Vec::with_capacity(sources.len() + 1);
            for source in sources.iter() {
                let mut prompt = engine
                    .tokenize(WITH_SOURCE.0, true)
                    .map_err(|e| e.to_string())?;
                let body = engine
                    .tokenize(&source.text, false)
                    .map_err(|e| e.to_string())?;
                let tail = engine
                    .tokenize(WITH_SOURCE.1, false)
                    .map_err(|e| e.to_string())?;
                let keep = room.saturating_sub(prompt.len() + tail.len());
                prompt.extend(body.into_iter().take(keep));
                prompt.extend(tail);
                prompts.push(prompt);
            }
            prompts.push(engine.tokenize(WITHOUT, true).map_err(|e| e.to_string())?);
            let streams = prompts
                .into_iter()
                .map(|prompt| {
                    engine.submit(GenerateRequest {
                        prompt,
                        teacher: Some(ids.clone()),
                        ..GenerateRequest::default()
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let mut means = Vec::with_capacity(streams.len());
            for mut stream in streams {
                let mut scores = None;
                while let Some(event) = stream.recv().await {
                    match event {
                        StreamEvent::Scores(s) => scores = Some(s),
                        StreamEvent::Error { message, .. } => return Err(message),
                        _ => {}
                    }
                }
                let scores = scores.ok_or("the scoring pass gave no scores")?;
                means.push(sentence_means(&scores, &offsets, &sentences));
            }
            let baseline = means.pop().expect("the pass without a source");
            let gains: Gains = means
                .into_iter()
                .map(|m| m.iter().zip(&baseline).map(|(a, b)| a - b).collect())
                .collect();
            Ok(gains)
        })
    }
}
