//! Chat templates: the Jinja `chat_template` a model ships (in `tokenizer_config.json`, as
//! `chat_template.jinja`, or as a GGUF's `tokenizer.chat_template`), rendered the way transformers'
//! `apply_chat_template` renders it.
//!
//! transformers compiles the template in a sandboxed Jinja environment with `trim_blocks` and
//! `lstrip_blocks`, loop controls, a `raise_exception(msg)` global, and passes `messages`,
//! `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`, ...) as variables.
//! minijinja with the same settings and minijinja-contrib's Python-compatible methods
//! (`.strip()`, `.upper()`, `.startswith()`, `.items()`, ...) renders the same text. The rendered
//! prompt already holds the template's own BOS, so it is tokenized without adding special tokens
//! ([`ChatTemplate::encode`]), as transformers does.

use crate::tokenizer::Tokenizer;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::path::Path;
use thiserror::Error as ThisError;

const NAME: &str = "chat_template";

/// A template that does not compile, or that fails (or raises) while rendering.
#[derive(Debug, ThisError, Clone, PartialEq, Eq)]
pub enum ChatTemplateError {
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    #[error("the chat template failed to render: {0}")]
    Render(String),
    #[error("the model has no chat template")]
    Missing,
}

/// One chat message. Extra fields (`name`, `tool_calls`, ...) are passed to the template as
/// they are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Json>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }
}

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// minijinja's error with its cause chain (the message `raise_exception` was given included).
fn describe(e: &Error) -> String {
    let mut msg = match e.kind() {
        // raise_exception's message is the whole story
        ErrorKind::InvalidOperation if e.detail().is_some() => {
            e.detail().unwrap_or_default().to_string()
        }
        _ => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// serde_json's compact output with Python's default separators, `", "` and `": "`.
struct PySeparators;

impl serde_json::ser::Formatter for PySeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`, keys in their
/// order (minijinja's own filter escapes `<`, `>`, `&` and `'` for HTML, which Python does not).
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PySeparators);
            serde::Serialize::serialize(&value, &mut ser)
        }
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&value, &mut ser)
        }
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from(text))
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the texts the template's
    /// `bos_token`/`eos_token` variables hold.
    pub fn new(
        source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        // transformers' settings: trim_blocks, lstrip_blocks, loop controls; jinja2's default of
        // dropping a single trailing newline
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("tojson", tojson);
        env.add_function("strftime_now", |format: String| -> Result<Value, Error> {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            strftime_utc(&format, now)
                .map(Value::from)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
        });
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The model's template, rendered with its tokenizer's BOS and EOS texts.
    pub fn for_model(source: &str, tokenizer: &Tokenizer) -> Result<Self, ChatTemplateError> {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.inner().id_to_token(id))
                .unwrap_or_default()
        };
        ChatTemplate::new(
            source,
            text(tokenizer.bos_token_id()),
            text(tokenizer.eos_token_ids().first().copied()),
        )
    }

    /// The prompt the template makes of `messages`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        tmpl.render(minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| ChatTemplateError::Render(describe(&e)))
    }

    /// Tokenizes a rendered prompt: without adding special tokens, so the template's own BOS
    /// (the text `<s>`, matched as the special token) is the only one.
    pub fn encode(tokenizer: &Tokenizer, rendered: &str) -> crate::error::Result<Vec<u32>> {
        tokenizer.encode(rendered, false)
    }
}

/// The template of a `tokenizer_config.json`: `chat_template` as a string, or a list of named
/// templates (`[{"name": "default", "template": ...}, {"name": "tool_use", ...}]`), of which the
/// one named "default" (transformers' choice when no name is asked for).
pub fn from_tokenizer_config(tc: &Json) -> Option<String> {
    match tc.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// A hub directory's template: `chat_template.jinja` (where transformers 4.43+ saves it), else
/// `tokenizer_config.json`'s.
pub fn from_dir(dir: &Path) -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
        return Some(s);
    }
    let tc = crate::config::read_json(&dir.join("tokenizer_config.json")).ok()?;
    from_tokenizer_config(&tc)
}

/// The template of a model path (a hub directory, a `.gguf` file or a directory holding one):
/// [`from_dir`] or the GGUF's `tokenizer.chat_template`. None when it has none or cannot be read.
pub fn for_path(path: &Path) -> Option<String> {
    match crate::resolve(path).ok()? {
        crate::Source::HfDir(dir) => from_dir(&dir),
        crate::Source::Gguf(file) => crate::gguf::GgufModel::open(&file)
            .ok()?
            .chat_template()
            .ok()?,
    }
}

/// `strftime_now(format)`, which transformers gives templates (Llama 3.x's templates print
/// today's date with `strftime_now("%d %b %Y")`): the time formatted as Python's `strftime`
/// formats it, for the directives templates use. transformers formats the local time; a worker's
/// clock is read in UTC here, which is what a server's local time usually is, without a time
/// zone database. Another directive is an error naming it, not silently wrong text.
fn strftime_utc(format: &str, unix_secs: u64) -> Result<String, String> {
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
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_date(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = ((days + 3).rem_euclid(7)) as usize;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
    let yday = before + day + u32::from(leap && month > 2);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month_name = MONTHS[month as usize - 1];
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("strftime_now: %{other} is not supported")),
            None => return Err("strftime_now: the format ends with a lone %".to_string()),
        }
    }
    Ok(out)
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01, counted in
/// 400-year eras of 146097 days, each starting on March 1st so that the leap day ends a year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_templates_use_default() {
        let tc = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "D"},
        ]});
        assert_eq!(from_tokenizer_config(&tc).as_deref(), Some("D"));
        let tc = serde_json::json!({"chat_template": "S"});
        assert_eq!(from_tokenizer_config(&tc).as_deref(), Some("S"));
        assert_eq!(from_tokenizer_config(&serde_json::json!({})), None);
    }

    #[test]
    fn raise_exception_is_a_render_error_naming_the_message() {
        let t =
            ChatTemplate::new("{{ raise_exception('no system role') }}", "<s>", "</s>").unwrap();
        let e = t
            .render(&[ChatMessage::new("user", "hi")], true)
            .unwrap_err();
        assert!(
            matches!(&e, ChatTemplateError::Render(m) if m.contains("no system role")),
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_is_typed() {
        let e = ChatTemplate::new("{% for m in messages %}", "<s>", "</s>").unwrap_err();
        assert!(matches!(e, ChatTemplateError::Syntax(_)), "{e}");
    }

    #[test]
    fn strftime_now_formats_like_python() {
        // Python: datetime.utcfromtimestamp(t).strftime(f)
        let cases = [
            (0, "%d %b %Y", "01 Jan 1970"),
            (951_782_400, "%Y-%m-%d %A %j", "2000-02-29 Tuesday 060"),
            (
                1_709_251_199,
                "%d %B %Y %H:%M:%S %p %I",
                "29 February 2024 23:59:59 PM 11",
            ),
            (1_735_689_600, "%a %y %% %j", "Wed 25 % 001"),
            (4_102_444_800, "%d %b %Y", "01 Jan 2100"),
        ];
        for (t, f, want) in cases {
            assert_eq!(strftime_utc(f, t).unwrap(), want, "{t} {f}");
        }
        assert!(strftime_utc("%Q", 0).unwrap_err().contains("%Q"));
        assert!(strftime_utc("50%", 0).is_err());
    }

    #[test]
    fn templates_can_call_strftime_now() {
        let t = ChatTemplate::new(
            "Today: {{ strftime_now('%Y') }}{% for m in messages %}|{{ m.content }}{% endfor %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let text = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
        let year: i64 = text["Today: ".len().."Today: ".len() + 4].parse().unwrap();
        assert!(year >= 2024, "{text}");
        assert!(text.ends_with("|hi"));
    }
}
