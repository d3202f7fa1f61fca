//! Chat templates: the Jinja templates Hugging Face models ship, rendered with minijinja in an
//! environment that mirrors the one `transformers` uses, so that a prompt renders to the same
//! bytes as in Python: `trim_blocks` and `lstrip_blocks` on, no trailing newline kept, loop
//! controls, Python string and dict methods, and transformers' own `raise_exception`, `tojson`
//! and `strftime_now`. Values print as Python prints them (`True`, `None`, `['a']`).

use std::fmt::{self, Write as _};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State, Value};

use crate::chat::ChatPrompt;
use crate::text_error::TextError;
use crate::tools::{self, ToolFormatKind};

const TEMPLATE_NAME: &str = "chat";

/// Gemma's official turn format (text only): the system prompt is folded into the first user
/// turn, the assistant is called `model`, and roles must alternate.
const GEMMA_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"#;

/// ChatML, the format of most small instruction-tuned models (SmolLM, Qwen ...).
const CHATML_TEMPLATE: &str = r#"{%- for message in messages -%}
    {{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|im_start|>assistant\n' }}
{%- endif -%}
"#;

/// Where a chat template came from; the server reports it so that users know how their chats
/// were formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// `tokenizer.chat_template` in the GGUF metadata.
    Gguf,
    /// `chat_template` in `tokenizer_config.json`.
    TokenizerConfig,
    /// A format built into cohost, used when the model carries no template.
    Builtin(&'static str),
}

impl fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateOrigin::Gguf => f.write_str("gguf"),
            TemplateOrigin::TokenizerConfig => f.write_str("tokenizer_config.json"),
            TemplateOrigin::Builtin(name) => write!(f, "builtin:{name}"),
        }
    }
}

/// A compiled chat template with the special tokens it may print.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    origin: TemplateOrigin,
    tool_format: ToolFormatKind,
}

impl ChatTemplate {
    pub fn new(
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
        origin: TemplateOrigin,
    ) -> Result<Self, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| TextError::TemplateSyntax(e.to_string()))?;
        Ok(Self {
            env,
            tool_format: tools::detect(&source),
            source,
            bos_token,
            eos_token,
            origin,
        })
    }

    /// The known turn format of an architecture whose model file has no template: Gemma's for
    /// the Gemma family, ChatML for everything else.
    pub fn fallback_for(
        architecture: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, TextError> {
        let (name, source) = if architecture.starts_with("gemma") {
            ("gemma", GEMMA_TEMPLATE)
        } else {
            ("chatml", CHATML_TEMPLATE)
        };
        Self::new(
            source.to_string(),
            bos_token,
            eos_token,
            TemplateOrigin::Builtin(name),
        )
    }

    /// Renders a chat. A template that refuses the chat (its `raise_exception`) gives
    /// [`TextError::TemplateRaised`] with the template's own message.
    pub fn render(&self, prompt: &ChatPrompt) -> Result<String, TextError> {
        // transformers passes `None` when there are no tools or documents; templates test
        // `tools is not none`, for which an empty list would be a (wrong) yes.
        let list_or_none = |items: &[serde_json::Value]| {
            if items.is_empty() {
                Value::from(())
            } else {
                Value::from_serialize(items)
            }
        };
        let token = |t: &Option<String>| t.as_deref().map_or(Value::UNDEFINED, Value::from);
        let switch = |b: Option<bool>| b.map_or(Value::UNDEFINED, Value::from);
        let ctx = minijinja::context! {
            messages => Value::from_serialize(&prompt.messages),
            tools => list_or_none(&prompt.tools),
            documents => list_or_none(&prompt.documents),
            add_generation_prompt => prompt.add_generation_prompt,
            bos_token => token(&self.bos_token),
            eos_token => token(&self.eos_token),
            enable_thinking => switch(prompt.thinking),
            reasoning => switch(prompt.thinking),
            safety_mode => prompt.safety_mode.map_or(Value::UNDEFINED, |m| Value::from(m.as_str())),
            enable_citations => switch(prompt.citations),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TextError::TemplateRender(e.to_string()))?;
        template.render(ctx).map_err(render_error)
    }

    /// Renders a chat for this model: [`ChatTemplate::render`] after
    /// [`tools::prepare_prompt`] and `grounding::prepare_documents`, so that tools, tool turns
    /// and documents reach the model in the form its template expects, or are described in the
    /// system turn when it renders none.
    pub fn render_chat(&self, prompt: &ChatPrompt) -> Result<String, TextError> {
        let prompt = tools::prepare_prompt(prompt, self.tool_format);
        let renders_documents = crate::grounding::template_renders_documents(&self.source);
        self.render(&crate::grounding::prepare_documents(
            &prompt,
            renders_documents,
        ))
    }

    /// How this model writes tool calls, read from the template text.
    pub fn tool_format(&self) -> ToolFormatKind {
        self.tool_format
    }

    pub fn origin(&self) -> &TemplateOrigin {
        &self.origin
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template itself renders tool definitions in a call format cohost parses;
    /// when it does not, [`ChatTemplate::render_chat`] describes the tools in the system turn.
    pub fn template_renders_tools(&self) -> bool {
        tools::format(self.tool_format).template_renders_tools()
    }
}

/// Marks an error raised by the template itself, to tell it apart from a broken template.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedByTemplate(message)))
}

fn render_error(err: Error) -> TextError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cause {
        if let Some(raised) = e.downcast_ref::<RaisedByTemplate>() {
            return TextError::TemplateRaised(raised.0.clone());
        }
        cause = e.source();
    }
    TextError::TemplateRender(err.to_string())
}

/// Prints values as Jinja2 does under Python: `True`, `None`, `['a', 1]`, `{'k': 'v'}`.
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => {
            let mut text = String::new();
            python_repr(&mut text, value);
            out.write_str(&text).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn python_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::String => python_str_repr(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(out, &item);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(out, &key);
                out.push_str(": ");
                python_repr(out, &value.get_item(&key).unwrap_or_default());
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text holds one and no double quote.
fn python_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !python_printable(c) => {
                let _ = match c as u32 {
                    n @ 0..=0xff => write!(out, "\\x{n:02x}"),
                    n @ 0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    n => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for one character, which `repr` escapes when false: controls,
/// separators other than the space, format characters (zero-width joiners, bidi marks) and
/// private use. Unassigned code points would need Unicode tables and are printed as they are.
fn python_printable(c: char) -> bool {
    !matches!(c as u32,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000
        | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

/// JSON as Python's `json.dumps(value, ensure_ascii=False)` writes it: key order kept, `", "`
/// and `": "` separators; the style models have seen most.
pub fn python_json(value: &serde_json::Value) -> String {
    let style = JsonStyle {
        indent: None,
        item_sep: ", ".to_string(),
        key_sep: ": ".to_string(),
        sort_keys: false,
        ensure_ascii: false,
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0);
    out
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, so key order is kept and separators carry a
/// space (`{"a": 1, "b": 2}`), unlike minijinja's compact, HTML-escaped built-in.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be (item_separator, key_separator)",
            ))
        }
        // Python drops the space after ',' when indenting (the newline separates items).
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, &json, &style, 0);
    Ok(out)
}

struct JsonStyle {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(out: &mut String, value: &serde_json::Value, style: &JsonStyle, depth: usize) {
    use serde_json::Value as J;
    match value {
        J::Array(items) if items.is_empty() => out.push_str("[]"),
        J::Object(map) if map.is_empty() => out.push_str("{}"),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                json_separator(out, style, depth + 1, i > 0);
                write_json(out, item, style, depth + 1);
            }
            json_newline(out, style, depth);
            out.push(']');
        }
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                json_separator(out, style, depth + 1, i > 0);
                json_string(out, key, style.ensure_ascii);
                out.push_str(&style.key_sep);
                write_json(out, item, style, depth + 1);
            }
            json_newline(out, style, depth);
            out.push('}');
        }
        J::String(s) => json_string(out, s, style.ensure_ascii),
        other => out.push_str(&other.to_string()),
    }
}

fn json_separator(out: &mut String, style: &JsonStyle, depth: usize, after_item: bool) {
    if after_item {
        out.push_str(&style.item_sep);
    }
    json_newline(out, style, depth);
}

fn json_newline(out: &mut String, style: &JsonStyle, depth: usize) {
    if let Some(width) = style.indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', width * depth));
    }
}

fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    // serde_json escapes exactly what Python escapes when non-ASCII is kept.
    let escaped = serde_json::to_string(s).unwrap_or_default();
    if !ensure_ascii {
        out.push_str(&escaped);
        return;
    }
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
}

/// transformers' `strftime_now(format)`. The server's clock is UTC.
fn strftime_now(format: String) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, now)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The common subset of C's `strftime` for a UTC Unix time; unknown directives are kept as
/// written, as glibc does.
pub fn strftime(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:2}"),
            Some('B') => write!(out, "{month_name}"),
            Some('b') | Some('h') => write!(out, "{}", &month_name[..3]),
            Some('A') => write!(out, "{}", WEEKDAYS[weekday]),
            Some('a') => write!(out, "{}", &WEEKDAYS[weekday][..3]),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{hour12:02}"),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('F') => write!(out, "{year}-{month:02}-{day:02}"),
            Some('T') => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday (leap day).
        let t = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(strftime("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(
            strftime("%A %B %e, %I %p, day %j", t),
            "Thursday February 29, 01 PM, day 060"
        );
        assert_eq!(strftime("%F %T %% %q", 0), "1970-01-01 00:00:00 % %q");
        assert_eq!(strftime("%Y-%m-%d", -86_400), "1969-12-31");
    }

    #[test]
    fn python_repr_matches_python() {
        let v = Value::from_serialize(serde_json::json!({"a": [true, null, "it's"], "b": 1.5}));
        let mut out = String::new();
        python_repr(&mut out, &v);
        assert_eq!(out, r#"{'a': [True, None, "it's"], 'b': 1.5}"#);

        let mut out = String::new();
        python_str_repr(&mut out, "a\u{200d}b\u{a0}c\té\u{e000}🎉\u{f0000}");
        assert_eq!(out, r"'a\u200db\xa0c\té\ue000🎉\U000f0000'");
    }
}
