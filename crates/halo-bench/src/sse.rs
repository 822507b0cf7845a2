//! Server-sent events and the OpenAI completions stream format.
//!
//! The parser is incremental (bytes arrive split anywhere, including inside a UTF-8 character or a
//! `\r\n`) and pure, so it is tested without a network. `interpret` turns one event's data into
//! what the benchmark needs: how many tokens it carried, the finish reason, the usage counts.

/// Incremental SSE parser: feed bytes, get the `data` payload of every completed event.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some(nl) = self.buf[consumed..].iter().position(|&b| b == b'\n') {
            let line_end = consumed + nl;
            let mut line = &self.buf[consumed..line_end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    events.push(d);
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                let value = String::from_utf8_lossy(value);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => self.data = Some(value.into_owned()),
                }
            }
            // Other fields (event:, id:, retry:) and comments (":") do not matter here.
            consumed = line_end + 1;
        }
        self.buf.drain(..consumed);
        events
    }

    /// At the end of the body: an event not followed by a blank line still counts.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.push(&rest);
            self.push(b"\n");
        }
        self.data.take()
    }
}

/// What one OpenAI completions stream event said.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventInfo {
    pub done: bool,
    /// Tokens this event carried: the length of `choices[0].token_ids` or
    /// `choices[0].logprobs.tokens` when the server sends them, else 1 when `choices[0].text` is
    /// non-empty, else 0.
    pub tokens: u32,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Prompt tokens served from the target's cache: OpenAI's
    /// `usage.prompt_tokens_details.cached_tokens`, else llama-server's `timings.cache_n`.
    pub cached_prompt_tokens: Option<u32>,
    /// The server reported an error inside the stream (its `error.type`, or "error").
    pub error: Option<String>,
}

fn as_u32(v: Option<&serde_json::Value>) -> Option<u32> {
    v.and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
}

/// Interprets one event's data. `Err` means the data is not the expected JSON.
pub fn interpret(data: &str) -> Result<EventInfo, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(EventInfo {
            done: true,
            ..Default::default()
        });
    }
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|_| "stream event is not JSON".to_string())?;
    let mut info = EventInfo::default();
    if let Some(err) = v.get("error") {
        let kind = err
            .get("type")
            .or_else(|| err.get("code"))
            .and_then(|t| {
                t.as_str()
                    .map(str::to_string)
                    .or_else(|| Some(t.to_string()))
            })
            .unwrap_or_else(|| "error".into());
        info.error = Some(kind);
        return Ok(info);
    }
    if let Some(choice) = v
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
    {
        let listed = choice
            .get("token_ids")
            .and_then(|t| t.as_array())
            .or_else(|| {
                choice
                    .get("logprobs")
                    .and_then(|l| l.get("tokens"))
                    .and_then(|t| t.as_array())
            })
            .map(|a| a.len() as u32);
        let text_nonempty = choice
            .get("text")
            .and_then(|t| t.as_str())
            .is_some_and(|t| !t.is_empty());
        info.tokens = listed.unwrap_or(u32::from(text_nonempty));
        info.finish_reason = choice
            .get("finish_reason")
            .and_then(|f| f.as_str())
            .map(str::to_string);
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        info.prompt_tokens = as_u32(u.get("prompt_tokens"));
        info.completion_tokens = as_u32(u.get("completion_tokens"));
        info.cached_prompt_tokens = as_u32(u.pointer("/prompt_tokens_details/cached_tokens"));
    }
    if info.cached_prompt_tokens.is_none() {
        info.cached_prompt_tokens = as_u32(v.pointer("/timings/cache_n"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere() {
        let body = "data: {\"a\":1}\n\n: keepalive\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        for split in 0..body.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&body.as_bytes()[..split]);
            got.extend(p.push(&body.as_bytes()[split..]));
            assert_eq!(got, vec!["{\"a\":1}", "x\ny", "[DONE]"], "split at {split}");
            assert_eq!(p.finish(), None);
        }
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: [DONE]").is_empty());
        assert_eq!(p.finish().as_deref(), Some("[DONE]"));
    }

    #[test]
    fn interprets_openai_chunks() {
        let c =
            interpret(r#"{"choices":[{"index":0,"text":" hi","finish_reason":null}]}"#).unwrap();
        assert_eq!((c.tokens, c.finish_reason.clone()), (1, None));
        let c = interpret(r#"{"choices":[{"text":"","finish_reason":"length"}],"usage":null}"#)
            .unwrap();
        assert_eq!((c.tokens, c.finish_reason.as_deref()), (0, Some("length")));
        let c =
            interpret(r#"{"choices":[{"text":"ab","logprobs":{"tokens":["a","b"]}}]}"#).unwrap();
        assert_eq!(c.tokens, 2);
        let c = interpret(r#"{"choices":[{"text":"abc","token_ids":[5,6,7]}]}"#).unwrap();
        assert_eq!(c.tokens, 3);
        let c = interpret(r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#).unwrap();
        assert_eq!(
            (c.tokens, c.prompt_tokens, c.completion_tokens),
            (0, Some(12), Some(30))
        );
        let c = interpret(r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}}"#).unwrap();
        assert_eq!(c.cached_prompt_tokens, Some(8));
        let c = interpret(r#"{"choices":[{"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":3},"timings":{"cache_n":5,"prompt_n":7}}"#).unwrap();
        assert_eq!(c.cached_prompt_tokens, Some(5));
        let c = interpret(r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#)
            .unwrap();
        assert_eq!(c.cached_prompt_tokens, None);
        assert!(interpret("[DONE]").unwrap().done);
        assert_eq!(
            interpret(r#"{"error":{"type":"overloaded","message":"m"}}"#)
                .unwrap()
                .error
                .as_deref(),
            Some("overloaded")
        );
        assert!(interpret("{oops").is_err());
    }
}
