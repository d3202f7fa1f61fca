//! ACCURATE citations: the model decides which source a sentence comes from.
//!
//! For every source, the reply is scored under the model twice by teacher forcing: after the
//! source's text, and after nothing. The *gain* of a source for a sentence is how much the
//! source raises the model's mean log-probability of the sentence's tokens (nats per token): a
//! sentence that restates a document becomes much more likely after it, whatever words it uses.
//! Then, per sentence:
//! - a FAST quote that several sources hold cites the ones the model prefers (the best gain,
//!   and any within [`TIE`] of it), so a phrase shared by a distractor is cited to the source
//!   the sentence really follows;
//! - a sentence with no quote (a paraphrase) cites its best source when the gain is clear
//!   ([`MIN_GAIN`], and [`MIN_MARGIN`] over the runner-up) and the sentence shares a content
//!   word with it;
//! - with no model evidence at all (scoring failed), FAST's citations stand.
//!
//! Cost: one teacher-forced pass over the reply per source, plus one without, batched together
//! by the engine: about as many decode steps as the reply has tokens, at a batch of
//! sources + 1.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use super::align::{is_content_word, Words};
use super::{Citation, Citer, Sentence, Source};

/// Least gain (nats per token) for a sentence without a quote to be cited.
pub const MIN_GAIN: f32 = 0.25;
/// Least lead of the best source over the next one for such a sentence.
pub const MIN_MARGIN: f32 = 0.1;
/// Sources of a shared quote within this much of the best gain are all cited.
pub const TIE: f32 = 0.05;

/// How much each source raises the model's likelihood of each sentence: `gains[source][sentence]`.
pub type Gains = Vec<Vec<f32>>;

/// A boxed future, so the scorer can live behind a trait object.
pub type GainsFuture = Pin<Box<dyn Future<Output = Result<Gains, String>> + Send>>;

/// What scores sentences against sources (the engine, through teacher forcing).
pub trait Attributor: Send + Sync {
    /// `gains[s][k]`: the gain of source `s` for the byte range `sentences[k]` of `text`.
    fn gains(
        &self,
        text: String,
        sentences: Vec<Range<usize>>,
        sources: Arc<[Source]>,
    ) -> GainsFuture;
}

/// The ACCURATE citations of a block's sentences (see the module docs).
pub fn cite(citer: &Citer, sentences: &[Sentence], gains: Option<&Gains>) -> Vec<Citation> {
    let Some(gains) = gains else {
        return citer.fast(sentences);
    };
    let mut out = Vec::new();
    for (k, sentence) in sentences.iter().enumerate() {
        let gain = |s: usize| gains.get(s).and_then(|g| g.get(k)).copied().unwrap_or(0.0);
        if sentence.quotes.is_empty() {
            if let Some((start, end, source)) = paraphrase(citer, sentence, &gain) {
                out.push(citer.citation(sentence, start, end, &[source]));
            }
            continue;
        }
        for quote in &sentence.quotes {
            let best = quote
                .sources
                .iter()
                .map(|&s| gain(s))
                .fold(f32::NEG_INFINITY, f32::max);
            let chosen: Vec<usize> = quote
                .sources
                .iter()
                .copied()
                .filter(|&s| gain(s) >= best - TIE)
                .collect();
            out.push(citer.citation(sentence, quote.start, quote.end, &chosen));
        }
    }
    out
}

/// A sentence without a quote: its content span and the one source the model clearly prefers.
fn paraphrase(
    citer: &Citer,
    sentence: &Sentence,
    gain: &dyn Fn(usize) -> f32,
) -> Option<(usize, usize, usize)> {
    let n = citer.sources().len();
    let mut ranked: Vec<(f32, usize)> = (0..n).map(|s| (gain(s), s)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (best, source) = *ranked.first()?;
    let runner_up = ranked.get(1).map_or(0.0, |r| r.0);
    if best < MIN_GAIN || best - runner_up < MIN_MARGIN {
        return None;
    }
    let words = Words::of(&sentence.text);
    let source_words = Words::of(&citer.sources()[source].text);
    let shares_content = words
        .words
        .iter()
        .any(|w| is_content_word(w) && source_words.words.contains(w));
    if !shares_content {
        return None;
    }
    let start = words.spans.first()?.0;
    let end = words.spans.last()?.1;
    Some((start, end, source))
}

/// Mean log-probability per sentence from per-token scores: token `i` covers bytes
/// `offsets[i]` of the text, and belongs to the sentence its first byte lies in.
pub fn sentence_means(
    scores: &[f32],
    offsets: &[(usize, usize)],
    sentences: &[Range<usize>],
) -> Vec<f32> {
    sentences
        .iter()
        .map(|range| {
            let (sum, count) = scores
                .iter()
                .zip(offsets)
                .filter(|(_, (start, _))| range.contains(start))
                .fold((0.0f32, 0usize), |(s, c), (lp, _)| (s + lp, c + 1));
            if count == 0 {
                0.0
            } else {
                sum / count as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grounding::SourceKind;
    use serde_json::Map;

    fn sources(texts: &[&str]) -> Arc<[Source]> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut fields = Map::new();
                fields.insert("text".into(), (*t).into());
                Source::new(format!("doc:{i}"), SourceKind::Document, fields)
            })
            .collect()
    }

    fn sentences(citer: &mut Citer, text: &str) -> Vec<Sentence> {
        let mut out = citer.push(text);
        out.extend(citer.finish());
        out
    }

    #[test]
    fn the_model_picks_among_sources_of_a_shared_quote_and_cites_paraphrases() {
        let docs = sources(&[
            "Lumra is a city of 12,000 people in Vextor.",
            "Quenmoor is a city of 40,000 people in Zorblatt.",
            "Bread is baked with flour.",
        ]);
        let mut citer = Citer::new(docs, 0);
        let text = "It is a city of many people. Zorblatt's capital has forty thousand residents.";
        let all = sentences(&mut citer, text);
        assert_eq!(all.len(), 2);
        // FAST cites the shared phrase to both cities' documents.
        let fast = citer.fast(&all);
        assert_eq!(fast.len(), 1);
        assert_eq!(fast[0].text, "is a city of");
        assert_eq!(fast[0].sources.len(), 2);
        // The model prefers doc:1 for both sentences, clearly for the second.
        let gains = vec![vec![0.1, 0.0], vec![0.6, 0.9], vec![0.0, 0.05]];
        let accurate = cite(&citer, &all, Some(&gains));
        assert_eq!(accurate.len(), 2);
        assert_eq!(accurate[0].sources.len(), 1);
        assert_eq!(accurate[0].sources[0].id, "doc:1");
        let second = &accurate[1];
        assert_eq!(
            second.text,
            "Zorblatt's capital has forty thousand residents"
        );
        assert_eq!(second.sources[0].id, "doc:1");
        assert_eq!(
            &text.chars().collect::<Vec<_>>()[second.start..second.end]
                .iter()
                .collect::<String>(),
            &second.text
        );
        // Unclear evidence cites nothing; no evidence falls back to FAST.
        let weak = vec![vec![0.1, 0.2], vec![0.1, 0.25], vec![0.0, 0.2]];
        assert_eq!(cite(&citer, &all, Some(&weak)).len(), 1);
        assert_eq!(cite(&citer, &all, None), fast);
    }

    #[test]
    fn sentence_means_group_tokens_by_where_they_start() {
        let scores = [-1.0, -2.0, -3.0, -5.0];
        let offsets = [(0, 3), (3, 6), (6, 9), (9, 12)];
        assert_eq!(
            sentence_means(&scores, &offsets, &[0..6, 6..12, 12..20]),
            vec![-1.5, -4.0, 0.0]
        );
    }
}
