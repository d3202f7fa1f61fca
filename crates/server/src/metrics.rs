//! `GET /metrics`: the server's counters in Prometheus text format (`prometheus-client`).
//!
//! What is counted and where it comes from:
//! - `cohost_requests_total{route, status}`: every HTTP request, by matched route pattern
//!   (`unmatched` for unknown paths, so a scan cannot grow the label set) and status code,
//!   counted by the [`count_requests`] middleware when the response head is ready.
//! - Per chat model (`model` label, so several served models stay apart):
//!   `cohost_prompt_tokens_total`, `cohost_generation_tokens_total`,
//!   `cohost_prompt_cached_tokens_total` (prompt tokens served from the prefix cache), and the
//!   histograms `cohost_time_to_first_token_seconds`, `cohost_inter_token_latency_seconds`,
//!   `cohost_request_duration_seconds` (end to end, also for streams a client left) from the
//!   chat handler; `cohost_queue_wait_seconds` and `cohost_batch_size` (sequences in one forward
//!   pass) from the engine's observer ([`runner::engine::EngineEvent`]), and
//!   `cohost_preemptions_total` (sequences that gave their KV cache up to a full pool),
//!   `cohost_draft_tokens_total` and `cohost_draft_accepted_tokens_total` (speculative
//!   drafts verified and accepted).
//! - Gauges per model, read when scraped or at each engine step: `cohost_running_sequences`,
//!   `cohost_queued_requests`, `cohost_kv_cache_tokens` and `cohost_kv_cache_capacity_tokens`.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use runner::engine::{EngineEvent, EngineHandle};

use crate::routes::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

type Histograms = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// Every metric the server exports, registered once at start.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    prompt_tokens: Family<ModelLabels, Counter>,
    generation_tokens: Family<ModelLabels, Counter>,
    cached_tokens: Family<ModelLabels, Counter>,
    time_to_first_token: Histograms,
    inter_token_latency: Histograms,
    request_duration: Histograms,
    queue_wait: Histograms,
    batch_size: Histograms,
    running: Family<ModelLabels, Gauge>,
    queued: Family<ModelLabels, Gauge>,
    kv_cache_tokens: Family<ModelLabels, Gauge>,
    kv_cache_capacity: Family<ModelLabels, Gauge>,
    preemptions: Family<ModelLabels, Counter>,
    draft_tokens: Family<ModelLabels, Counter>,
    draft_accepted: Family<ModelLabels, Counter>,
}

/// Seconds from 1 ms to about 65 s (doubling): first-token and end-to-end times.
fn latency_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Seconds from 0.5 ms to about 2 s: the gap between two tokens of one stream.
fn token_gap_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 13))
}

/// Sequences per forward pass: 1 to 256.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cohost");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests by matched route and status code",
            requests.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ModelLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let prompt_tokens = counter(
            &mut registry,
            "prompt_tokens",
            "Prompt tokens of chat requests",
        );
        let generation_tokens = counter(&mut registry, "generation_tokens", "Tokens generated");
        let cached_tokens = counter(
            &mut registry,
            "prompt_cached_tokens",
            "Prompt tokens served from the prefix cache instead of computed",
        );
        let histogram =
            |registry: &mut Registry, name: &str, help: &str, buckets: fn() -> Histogram| {
                let family = Histograms::new_with_constructor(buckets);
                registry.register(name, help, family.clone());
                family
            };
        let time_to_first_token = histogram(
            &mut registry,
            "time_to_first_token_seconds",
            "From the request's arrival to its first generated text",
            latency_seconds,
        );
        let inter_token_latency = histogram(
            &mut registry,
            "inter_token_latency_seconds",
            "Between two generated tokens of one reply",
            token_gap_seconds,
        );
        let request_duration = histogram(
            &mut registry,
            "request_duration_seconds",
            "Chat requests end to end, from arrival to the last byte or the client leaving",
            latency_seconds,
        );
        let queue_wait = histogram(
            &mut registry,
            "queue_wait_seconds",
            "From admission to a running slot",
            latency_seconds,
        );
        let batch_size = histogram(
            &mut registry,
            "batch_size",
            "Sequences in one forward pass",
            batch_sizes,
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ModelLabels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let running = gauge(
            &mut registry,
            "running_sequences",
            "Sequences generating now",
        );
        let queued = gauge(
            &mut registry,
            "queued_requests",
            "Requests waiting for a slot",
        );
        let kv_cache_tokens = gauge(
            &mut registry,
            "kv_cache_tokens",
            "Positions of the KV pool's blocks held by running sequences",
        );
        let kv_cache_capacity = gauge(
            &mut registry,
            "kv_cache_capacity_tokens",
            "Positions the KV pool holds (--kv-cache-mb)",
        );
        let preemptions = counter(
            &mut registry,
            "preemptions",
            "Running sequences that gave their KV cache up because the pool was full (they resume from the prefix cache)",
        );
        let draft_tokens = counter(
            &mut registry,
            "draft_tokens",
            "Speculative draft tokens verified (prompt lookup, --draft-tokens)",
        );
        let draft_accepted = counter(
            &mut registry,
            "draft_accepted_tokens",
            "Speculative draft tokens accepted: tokens decoded without a forward pass of their own",
        );
        Self {
            registry,
            requests,
            prompt_tokens,
            generation_tokens,
            cached_tokens,
            time_to_first_token,
            inter_token_latency,
            request_duration,
            queue_wait,
            batch_size,
            running,
            queued,
            kv_cache_tokens,
            kv_cache_capacity,
            preemptions,
            draft_tokens,
            draft_accepted,
        }
    }
}

fn model(name: &str) -> ModelLabels {
    ModelLabels {
        model: name.to_string(),
    }
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// A chat reply's first generated text, this long after the request arrived.
    pub fn first_token(&self, name: &str, after: Duration) {
        self.time_to_first_token
            .get_or_create(&model(name))
            .observe(after.as_secs_f64());
    }

    /// `tokens` new tokens arrived `gap` after the previous ones: one gap each, evenly spread.
    pub fn token_gap(&self, name: &str, gap: Duration, tokens: usize) {
        if tokens == 0 {
            return;
        }
        let histogram = self.inter_token_latency.get_or_create(&model(name));
        let each = gap.as_secs_f64() / tokens as f64;
        for _ in 0..tokens {
            histogram.observe(each);
        }
    }

    /// A chat request is over (finished, failed or abandoned), with the tokens it used.
    pub fn chat_done(&self, name: &str, took: Duration, usage: &ChatUsage) {
        let labels = model(name);
        self.request_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.prompt_tokens
            .get_or_create(&labels)
            .inc_by(usage.prompt as u64);
        self.generation_tokens
            .get_or_create(&labels)
            .inc_by(usage.generated as u64);
        self.cached_tokens
            .get_or_create(&labels)
            .inc_by(usage.cached as u64);
    }

    /// What the engine of chat model `name` reports.
    pub fn engine_event(&self, name: &str, event: &EngineEvent) {
        let labels = model(name);
        match *event {
            EngineEvent::Scheduled { queue_wait } => self
                .queue_wait
                .get_or_create(&labels)
                .observe(queue_wait.as_secs_f64()),
            EngineEvent::Step {
                sequences,
                cached_tokens,
                cache_capacity,
                ..
            } => {
                self.batch_size
                    .get_or_create(&labels)
                    .observe(sequences as f64);
                self.kv_cache_tokens
                    .get_or_create(&labels)
                    .set(cached_tokens as i64);
                self.kv_cache_capacity
                    .get_or_create(&labels)
                    .set(cache_capacity as i64);
            }
            EngineEvent::Preempted { .. } => {
                self.preemptions.get_or_create(&labels).inc();
            }
            EngineEvent::Drafted { drafted, accepted } => {
                self.draft_tokens
                    .get_or_create(&labels)
                    .inc_by(drafted as u64);
                self.draft_accepted
                    .get_or_create(&labels)
                    .inc_by(accepted as u64);
            }
        }
    }

    /// The text exposition, with the load gauges read from each chat engine now.
    pub fn render(&self, engines: &[(&str, &EngineHandle)]) -> String {
        for (name, engine) in engines {
            let (queued, running) = engine.load();
            let labels = model(name);
            self.queued.get_or_create(&labels).set(queued as i64);
            self.running.get_or_create(&labels).set(running as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The tokens a chat request used, for [`Metrics::chat_done`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ChatUsage {
    pub prompt: usize,
    pub generated: usize,
    pub cached: usize,
}

/// Middleware over the whole router: counts each response by its route pattern and status.
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics().request(&route, response.status().as_u16());
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let engines: Vec<(&str, &EngineHandle)> = match state.registry() {
        Ok(registry) => registry
            .models()
            .iter()
            .filter_map(|m| match &m.backend {
                crate::registry::Backend::Chat(engine) => Some((m.backend.own_name(), engine)),
                crate::registry::Backend::Encoder(_) => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let text = state.metrics().render(&engines);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels_and_help() {
        let metrics = Metrics::default();
        metrics.request("/v2/chat", 200);
        metrics.request("/v2/chat", 200);
        metrics.request("unmatched", 404);
        metrics.first_token("m", Duration::from_millis(30));
        metrics.token_gap("m", Duration::from_millis(20), 2);
        metrics.chat_done(
            "m",
            Duration::from_millis(100),
            &ChatUsage {
                prompt: 7,
                generated: 3,
                cached: 0,
            },
        );
        metrics.engine_event(
            "m",
            &EngineEvent::Step {
                sequences: 2,
                tokens: 9,
                cached_tokens: 40,
                cache_capacity: 1024,
            },
        );
        let text = metrics.render(&[]);
        for line in [
            "cohost_requests_total{route=\"/v2/chat\",status=\"200\"} 2",
            "cohost_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "cohost_prompt_tokens_total{model=\"m\"} 7",
            "cohost_generation_tokens_total{model=\"m\"} 3",
            "cohost_time_to_first_token_seconds_count{model=\"m\"} 1",
            "cohost_inter_token_latency_seconds_count{model=\"m\"} 2",
            "cohost_request_duration_seconds_sum{model=\"m\"} 0.1",
            "cohost_batch_size_bucket{le=\"2.0\",model=\"m\"} 1",
            "cohost_kv_cache_tokens{model=\"m\"} 40",
            "cohost_kv_cache_capacity_tokens{model=\"m\"} 1024",
            "# HELP cohost_batch_size Sequences in one forward pass.",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
