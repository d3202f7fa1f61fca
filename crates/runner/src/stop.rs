//! Stop sequences over streamed text.
//!
//! Text arrives in pieces that need not line up with a stop sequence, so any tail that could
//! still grow into one is held back until it either completes (generation stops, the match and
//! everything after it are dropped) or can no longer match (it is released).
//!
//! When several stop sequences could apply, the one that completes first in the text wins
//! (earliest end; at equal ends, the one starting earlier), because that is where token-by-token
//! generation would have stopped. The result never depends on how the text was split.

/// What one [`StopMatcher::push`] releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text that is now final and can be sent.
    pub emit: String,
    /// A stop sequence completed: `emit` is the last text of the generation.
    pub stopped: bool,
}

#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released: the longest tail that is a proper prefix of some stop sequence.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop sequences are ignored: they would match before any text.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutput {
        if self.stopped {
            return StopOutput {
                emit: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(text);
        if let Some(start) = self.first_match() {
            self.held.truncate(start);
            self.stopped = true;
            return StopOutput {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep_from = self.partial_match_start();
        let rest = self.held.split_off(keep_from);
        StopOutput {
            emit: std::mem::replace(&mut self.held, rest),
            stopped: false,
        }
    }

    /// Generation ended for another reason: the held-back text is final after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Start of the match that ends first, if any stop sequence occurs in the held text.
    fn first_match(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| {
                self.held
                    .find(stop.as_str())
                    .map(|at| (at + stop.len(), at))
            })
            .min()
            .map(|(_, start)| start)
    }

    /// Where the longest tail that some stop sequence begins with starts (the text's end if
    /// none). Every match must start inside this tail, so everything before it is final.
    fn partial_match_start(&self) -> usize {
        self.held
            .char_indices()
            .map(|(at, _)| at)
            .find(|&at| {
                let tail = &self.held[at..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_partial_match_then_releases_it() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("hello ST").emit, "hello ");
        let out = m.push("ART");
        assert_eq!(out.emit, "START");
        assert!(!out.stopped);
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn cuts_before_the_match_and_stays_stopped() {
        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("a\n").emit, "a");
        let out = m.push("\nb");
        assert_eq!(
            out,
            StopOutput {
                emit: String::new(),
                stopped: true
            }
        );
        assert!(m.push("more").stopped);
        assert_eq!(m.finish(), "");
    }
}
