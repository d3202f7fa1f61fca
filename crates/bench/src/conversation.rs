//! The conversation workloads (`multi-turn`, `round-robin`): chats that resend their whole
//! history every turn, as a chat client does, with the assistant turns the server actually
//! streamed. Each user turn adds new text, so turn t's prompt is turn t-1's prompt and reply plus
//! the new message: a server with a prompt cache prefills only the new part.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{ChatMessage, Target};
use crate::prompt;
use crate::stats::{LevelReport, RequestOutcome, TtftGroup};
use crate::Workload;

/// In which order the conversations' turns are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Every conversation at once, each sending its next turn as soon as its reply is in.
    Independent,
    /// Turn t of every conversation before turn t+1 of any, at most `in_flight` at a time: with
    /// more conversations than a server has slots, a conversation comes back after others have
    /// used the slot it had.
    RoundRobin { in_flight: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPlan {
    pub order: Order,
    pub conversations: usize,
    /// User turns per conversation.
    pub turns: usize,
    /// About how many tokens each user turn adds.
    pub turn_tokens: usize,
}

impl ConversationPlan {
    pub fn workload(&self) -> Workload {
        match self.order {
            Order::Independent => Workload::MultiTurn,
            Order::RoundRobin { .. } => Workload::RoundRobin,
        }
    }

    /// Requests in flight at most.
    pub fn in_flight(&self) -> usize {
        match self.order {
            Order::Independent => self.conversations,
            Order::RoundRobin { in_flight } => in_flight.min(self.conversations),
        }
    }
}

/// The (conversation, turn) pairs in round-robin order: every conversation's turn 1, then every
/// conversation's turn 2, ... (conversations 0-based, turns 1-based).
pub fn round_robin_order(conversations: usize, turns: usize) -> Vec<(usize, usize)> {
    (1..=turns)
        .flat_map(|turn| (0..conversations).map(move |c| (c, turn)))
        .collect()
}

/// One turn as it went.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub conversation: usize,
    /// 1-based.
    pub turn: usize,
    /// The place of this request among all the run's requests, in the order they were sent;
    /// `None` for a turn not sent.
    pub sent: Option<usize>,
    /// `None`: not sent, because an earlier turn of the conversation failed (there is no reply
    /// to continue from).
    pub outcome: Option<RequestOutcome>,
}

/// A conversation's state, shared by the tasks that send its turns (one at a time: a turn waits
/// for `done` to reach the turn before it).
struct Chat {
    history: Mutex<Vec<ChatMessage>>,
    failed: Mutex<bool>,
    /// Turns finished (sent and answered, failed or skipped).
    done: watch::Sender<usize>,
}

struct Run {
    target: Target,
    model: Option<String>,
    max_tokens: usize,
    turn_tokens: usize,
    tag: String,
    chats: Vec<Chat>,
    sent: AtomicUsize,
}

impl Run {
    /// Sends turn `turn` of conversation `c` once its previous turn is done.
    async fn turn(&self, c: usize, turn: usize) -> TurnRecord {
        let chat = &self.chats[c];
        let mut done = chat.done.subscribe();
        // The sender lives in `self`, so the wait ends when the previous turn does.
        let _ = done.wait_for(|&d| d + 1 >= turn).await;
        let record = |sent, outcome| TurnRecord {
            conversation: c,
            turn,
            sent,
            outcome,
        };
        if *chat.failed.lock().unwrap() {
            chat.done.send_replace(turn);
            return record(None, None);
        }
        let user = ChatMessage::new(
            "user",
            prompt::turn_message(&self.tag, c, turn, self.turn_tokens),
        );
        let mut messages = chat.history.lock().unwrap().clone();
        messages.push(user.clone());
        // For llama-server the template is rendered here, before the clock starts (in `stream`).
        let outcome = match self
            .target
            .history_body(self.model.as_deref(), &messages, self.max_tokens)
            .await
        {
            Ok(body) => {
                let sent = Some(self.sent.fetch_add(1, Ordering::SeqCst));
                let outcome = self
                    .target
                    .stream(&body)
                    .await
                    .unwrap_or_else(|e| RequestOutcome::failed(e.to_string()));
                (sent, outcome)
            }
            Err(e) => (
                None,
                RequestOutcome::failed(format!("cannot render the chat template: {e}")),
            ),
        };
        let (sent, outcome) = outcome;
        if outcome.error.is_some() {
            *chat.failed.lock().unwrap() = true;
        } else {
            let mut history = chat.history.lock().unwrap();
            history.push(user);
            history.push(ChatMessage::new("assistant", assistant_turn(&outcome.text)));
        }
        chat.done.send_replace(turn);
        record(sent, Some(outcome))
    }
}

/// The assistant message that goes back into the history: the reply as streamed. An empty reply
/// (the model stopped at once) is not a valid chat message for every server, so it becomes a
/// fixed placeholder.
pub fn assistant_turn(reply: &str) -> String {
    if reply.trim().is_empty() {
        "(no reply)".to_string()
    } else {
        reply.to_string()
    }
}

/// Runs every conversation to its last turn (or its first failure); the pooled level (all
/// requests, concurrency = requests in flight at most) and the per-turn summary.
pub async fn run(
    plan: &ConversationPlan,
    target: &Target,
    model: Option<&str>,
    max_tokens: usize,
    tag: &str,
) -> (LevelReport, ConversationReport) {
    let run = Arc::new(Run {
        target: target.clone(),
        model: model.map(String::from),
        max_tokens,
        turn_tokens: plan.turn_tokens,
        tag: tag.to_string(),
        chats: (0..plan.conversations)
            .map(|_| Chat {
                history: Mutex::new(Vec::new()),
                failed: Mutex::new(false),
                done: watch::Sender::new(0),
            })
            .collect(),
        sent: AtomicUsize::new(0),
    });
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match plan.order {
        Order::Independent => {
            for c in 0..plan.conversations {
                let run = run.clone();
                let turns = plan.turns;
                tasks.spawn(async move {
                    let mut records = Vec::with_capacity(turns);
                    for turn in 1..=turns {
                        records.push(run.turn(c, turn).await);
                    }
                    records
                });
            }
        }
        Order::RoundRobin { .. } => {
            // Workers take the next (conversation, turn) in order; one whose conversation is
            // still on its previous turn waits for it, keeping its place.
            let order = Arc::new(round_robin_order(plan.conversations, plan.turns));
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..plan.in_flight() {
                let (run, order, next) = (run.clone(), order.clone(), next.clone());
                tasks.spawn(async move {
                    let mut records = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&(c, turn)) = order.get(i) else {
                            break;
                        };
                        records.push(run.turn(c, turn).await);
                    }
                    records
                });
            }
        }
    }
    let mut records = Vec::with_capacity(plan.conversations * plan.turns);
    while let Some(joined) = tasks.join_next().await {
        // A task cannot panic short of a bug here; its turns are then missing from the report.
        records.extend(joined.unwrap_or_default());
    }
    let wall = start.elapsed();
    records.sort_by_key(|r| (r.conversation, r.turn));
    summarise(plan, &records, wall)
}

/// The per-turn summary of a conversation workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationReport {
    pub conversations: usize,
    pub turns: usize,
    /// Requests in flight at most.
    pub in_flight: usize,
    /// About how many tokens each user turn added.
    pub turn_tokens: usize,
    /// Turn 1 (index 0) to turn `turns`.
    pub per_turn: Vec<TtftGroup>,
    /// Turns 2..=turns pooled: the turns a prompt cache can serve.
    pub later_turns: TtftGroup,
    /// Every turn pooled.
    pub all: TtftGroup,
    /// Turns not sent because an earlier turn of their conversation failed.
    pub skipped: usize,
}

impl ConversationReport {
    pub fn first_turn(&self) -> Option<&TtftGroup> {
        self.per_turn.first()
    }
}

/// Summarises the records of a run that took `wall`.
pub fn summarise(
    plan: &ConversationPlan,
    records: &[TurnRecord],
    wall: Duration,
) -> (LevelReport, ConversationReport) {
    let sent = |pred: &dyn Fn(usize) -> bool| -> Vec<&RequestOutcome> {
        records
            .iter()
            .filter(|r| pred(r.turn))
            .filter_map(|r| r.outcome.as_ref())
            .collect()
    };
    let per_turn = (1..=plan.turns)
        .map(|t| TtftGroup::of(sent(&|turn| turn == t)))
        .collect();
    let all: Vec<RequestOutcome> = sent(&|_| true).into_iter().cloned().collect();
    let level = LevelReport::summarise(plan.in_flight(), &all, wall);
    let report = ConversationReport {
        conversations: plan.conversations,
        turns: plan.turns,
        in_flight: plan.in_flight(),
        turn_tokens: plan.turn_tokens,
        per_turn,
        later_turns: TtftGroup::of(sent(&|turn| turn >= 2)),
        all: TtftGroup::of(&all),
        skipped: records.iter().filter(|r| r.outcome.is_none()).count(),
    };
    (level, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_sends_every_turn_t_before_any_turn_t_plus_one() {
        let order = round_robin_order(3, 2);
        assert_eq!(order, [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]);
        let order = round_robin_order(32, 4);
        assert_eq!(order.len(), 128);
        for (i, &(c, t)) in order.iter().enumerate() {
            assert_eq!((c, t), (i % 32, i / 32 + 1));
        }
    }

    #[test]
    fn in_flight_is_capped_by_the_conversations() {
        let plan = |order| ConversationPlan {
            order,
            conversations: 8,
            turns: 2,
            turn_tokens: 10,
        };
        assert_eq!(plan(Order::Independent).in_flight(), 8);
        assert_eq!(plan(Order::RoundRobin { in_flight: 3 }).in_flight(), 3);
        assert_eq!(plan(Order::RoundRobin { in_flight: 16 }).in_flight(), 8);
        assert_eq!(plan(Order::Independent).workload(), Workload::MultiTurn);
    }

    #[test]
    fn empty_replies_become_a_placeholder() {
        assert_eq!(assistant_turn(" Paris."), " Paris.");
        assert_eq!(assistant_turn(" \n"), "(no reply)");
    }

    fn record(c: usize, turn: usize, ttft_ms: u64, cached: Option<usize>) -> TurnRecord {
        TurnRecord {
            conversation: c,
            turn,
            sent: Some(0),
            outcome: Some(RequestOutcome {
                chunk_times: vec![Duration::from_millis(ttft_ms)],
                output_tokens: 1,
                prompt_tokens: Some(100 * turn),
                cached_tokens: cached,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_summary_splits_turn_one_from_the_later_turns() {
        let plan = ConversationPlan {
            order: Order::Independent,
            conversations: 2,
            turns: 3,
            turn_tokens: 100,
        };
        let records = vec![
            record(0, 1, 1000, Some(0)),
            record(1, 1, 1200, Some(0)),
            record(0, 2, 100, Some(150)),
            record(1, 2, 140, Some(150)),
            record(0, 3, 90, Some(250)),
            // Conversation 1's last turn was not sent: its turn 2 failed... here, skipped.
            TurnRecord {
                conversation: 1,
                turn: 3,
                sent: None,
                outcome: None,
            },
        ];
        let (level, report) = summarise(&plan, &records, Duration::from_secs(2));
        assert_eq!((level.concurrency, level.requests), (2, 5));
        assert_eq!(report.skipped, 1);
        let median = |g: &TtftGroup| g.ttft_ms.unwrap().p50;
        assert_eq!(median(report.first_turn().unwrap()), 1100.0);
        assert_eq!(report.per_turn.len(), 3);
        assert_eq!(median(&report.per_turn[1]), 120.0);
        assert_eq!(median(&report.per_turn[2]), 90.0);
        assert_eq!(report.per_turn[2].requests, 1);
        // Turns 2 and 3 pooled: 90, 100, 140.
        assert_eq!(median(&report.later_turns), 100.0);
        assert!((report.later_turns.ttft_ms.unwrap().mean - 110.0).abs() < 1e-9);
        // Cached over prompt tokens: (150 + 150 + 250) of (200 + 200 + 300).
        assert_eq!(report.later_turns.cached_tokens, Some(550));
        assert_eq!(report.all.prompt_tokens, Some(100 + 100 + 200 + 200 + 300));
        assert_eq!(report.all.requests, 5);
    }
}
