//! Token usage read from a vendor's successful responses while they stream through the proxy.
//!
//! A `text/event-stream` body is split into events (lines end with LF, CRLF or CR, also across
//! chunk boundaries) and the `data` of each event is parsed as JSON when it mentions `usage`
//! (`[DONE]` and content deltas are skipped). An `application/json` (or `+json`) body is held
//! until its end, then parsed (a JSON array, as Gemini's non-SSE stream, is read element by
//! element). Other types are not metered. Usage objects are looked for at `usage`,
//! `usageMetadata`, `message.usage` (Anthropic `message_start`) and `response.usage` (OpenAI
//! Responses `response.completed`).
//!
//! Within one response each figure is the largest any event reported (Anthropic's
//! `message_delta` and Gemini's chunks are cumulative; OpenAI reports once); the run adds up its
//! responses. Input counts cached tokens too: Anthropic's `input_tokens` excludes them, so its
//! `cache_read_input_tokens` and `cache_creation_input_tokens` are added (as the worker's reader
//! of Claude Code's own report does).
//!
//! Cost: an SSE response holds at most one line and one event's data, each capped at
//! [`MAX_HELD`] (1 MiB); a JSON response holds its body up to [`MAX_HELD`]. Past that the
//! response is unmetered and its buffer freed. Nothing is preallocated.

use outpost_core::domain::MeteredUsage;
use serde_json::Value;

/// Most bytes held for one SSE line or event, or one JSON body.
pub const MAX_HELD: usize = 1024 * 1024;

/// Buffers larger than this are freed rather than kept for the next line.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One response's token figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

impl Figures {
    fn max(self, o: Self) -> Self {
        Self {
            input: self.input.max(o.input),
            output: self.output.max(o.output),
            cached: self.cached.max(o.cached),
        }
    }

    /// Adds one response's figures (`None`: a response without readable usage) to the run's.
    pub fn add_to(response: Option<Self>, run: &mut MeteredUsage) {
        match response {
            Some(f) => {
                run.input_tokens = run.input_tokens.saturating_add(f.input);
                run.output_tokens = run.output_tokens.saturating_add(f.output);
                run.cached_input_tokens = run.cached_input_tokens.saturating_add(f.cached);
                run.responses = run.responses.saturating_add(1);
            }
            None => run.unmetered_responses = run.unmetered_responses.saturating_add(1),
        }
    }
}

/// The usage reader of one response body.
#[derive(Debug)]
pub enum Meter {
    Sse(SseMeter),
    Json(JsonMeter),
}

impl Meter {
    /// The reader for a response of this `Content-Type`, `None` for a type that is not metered.
    pub fn for_content_type(content_type: Option<&[u8]>) -> Option<Self> {
        let ct = std::str::from_utf8(content_type?).ok()?;
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media == "text/event-stream" {
            Some(Self::Sse(SseMeter::default()))
        } else if media == "application/json" || (media.starts_with("application/") && media.ends_with("+json")) {
            Some(Self::Json(JsonMeter::default()))
        } else {
            None
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Self::Sse(m) => m.feed(chunk),
            Self::Json(m) => m.feed(chunk),
        }
    }

    /// The response's figures once its body ended (or was cut short); `None` when no usage was
    /// readable.
    pub fn finish(self) -> Option<Figures> {
        match self {
            Self::Sse(m) => m.finish(),
            Self::Json(m) => m.finish(),
        }
    }
}

/// Server-sent events: the current line, the current event's data, the figures so far.
#[derive(Debug, Default)]
pub struct SseMeter {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last byte seen ended a line with CR: an LF right after it belongs to that line end.
    after_cr: bool,
    overflow: bool,
    figures: Option<Figures>,
}

impl SseMeter {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !self.overflow && !chunk.is_empty() {
            if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
                chunk = &chunk[1..];
                continue;
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.push(&chunk[..i]);
                    self.end_line();
                    self.after_cr = chunk[i] == b'\r';
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.push(chunk);
                    chunk = &[];
                }
            }
        }
    }

    fn push(&mut self, part: &[u8]) {
        if self.line.len() + part.len() > MAX_HELD {
            self.overflowed();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn overflowed(&mut self) {
        self.overflow = true;
        self.line = Vec::new();
        self.data = Vec::new();
    }

    fn end_line(&mut self) {
        if self.overflow {
            return;
        }
        if self.line.is_empty() {
            self.dispatch();
            return;
        }
        let line = &self.line[..];
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if name == b"data" {
            if self.data.len() + value.len() + 1 > MAX_HELD {
                self.overflowed();
                return;
            }
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        self.line.clear();
        if self.line.capacity() > KEEP_CAPACITY {
            self.line = Vec::new();
        }
    }

    fn dispatch(&mut self) {
        if self.has_data && contains(&self.data, b"usage") {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.data) {
                if let Some(f) = figures_of(&v) {
                    self.figures = Some(self.figures.map_or(f, |g| g.max(f)));
                }
            }
        }
        self.has_data = false;
        self.data.clear();
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        }
    }

    pub fn finish(mut self) -> Option<Figures> {
        if !self.line.is_empty() {
            self.end_line();
        }
        if !self.overflow {
            self.dispatch();
        }
        if self.overflow {
            None
        } else {
            self.figures
        }
    }
}

/// A JSON body, held up to [`MAX_HELD`].
#[derive(Debug, Default)]
pub struct JsonMeter {
    body: Vec<u8>,
    overflow: bool,
}

impl JsonMeter {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.overflow {
            return;
        }
        if self.body.len() + chunk.len() > MAX_HELD {
            self.overflow = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    pub fn finish(self) -> Option<Figures> {
        if self.overflow {
            return None;
        }
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        match &v {
            Value::Array(items) => items.iter().filter_map(figures_of).reduce(Figures::max),
            one => figures_of(one),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The figures of one JSON event or body: the largest over the usage objects it holds.
pub fn figures_of(v: &Value) -> Option<Figures> {
    [
        v.get("usage"),
        v.get("usageMetadata"),
        v.pointer("/message/usage"),
        v.pointer("/response/usage"),
    ]
    .into_iter()
    .flatten()
    .filter_map(usage_object)
    .reduce(Figures::max)
}

/// The figures of one usage object (Anthropic, OpenAI Responses, chat completions or Gemini
/// shape); `None` when it holds none of their fields.
fn usage_object(u: &Value) -> Option<Figures> {
    let obj = u.as_object()?;
    let n = |k: &str| obj.get(k).and_then(Value::as_u64);
    let at = |p: &str| u.pointer(p).and_then(Value::as_u64);
    let cache_read = n("cache_read_input_tokens");
    let cache_created = n("cache_creation_input_tokens");
    let base_input = n("input_tokens")
        .or_else(|| n("prompt_tokens"))
        .or_else(|| n("promptTokenCount"));
    let input = match (base_input, cache_read, cache_created) {
        (None, None, None) => None,
        (a, b, c) => Some(
            a.unwrap_or(0)
                .saturating_add(b.unwrap_or(0))
                .saturating_add(c.unwrap_or(0)),
        ),
    };
    let base_output = n("output_tokens")
        .or_else(|| n("completion_tokens"))
        .or_else(|| n("candidatesTokenCount"));
    let thoughts = n("thoughtsTokenCount");
    let output = match (base_output, thoughts) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    };
    let cached = cache_read
        .or_else(|| at("/input_tokens_details/cached_tokens"))
        .or_else(|| at("/prompt_tokens_details/cached_tokens"))
        .or_else(|| n("cachedContentTokenCount"));
    if input.is_none() && output.is_none() && cached.is_none() {
        return None;
    }
    Some(Figures {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        cached: cached.unwrap_or(0),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const ANTHROPIC_JSON: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1234,"output_tokens":56,"cache_read_input_tokens":0}}"#;

    pub(crate) const ANTHROPIC_SSE: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":1234,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":56}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    pub(crate) const OPENAI_RESPONSES_SSE: &str = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":1234,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":56,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":1290}}}",
    );

    pub(crate) const CHAT_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1234,"completion_tokens":56,"total_tokens":1290}}"#;

    const CHAT_SSE: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1234,\"completion_tokens\":56,\"total_tokens\":1290,\"prompt_tokens_details\":{\"cached_tokens\":1000}}}\n\n",
        "data: [DONE]\n\n",
    );

    pub(crate) const GEMINI_SSE: &str = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":1234,\"candidatesTokenCount\":20,\"totalTokenCount\":1254},\"modelVersion\":\"gemini-2.5-pro\"}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":1234,\"candidatesTokenCount\":56,\"totalTokenCount\":1290},\"modelVersion\":\"gemini-2.5-pro\"}\r\n\r\n",
    );

    fn read(content_type: &str, body: &[u8], chunk: usize) -> Option<Figures> {
        let mut m = Meter::for_content_type(Some(content_type.as_bytes())).expect("a metered type");
        for c in body.chunks(chunk.max(1)) {
            m.feed(c);
        }
        m.finish()
    }

    fn f(input: u64, output: u64, cached: u64) -> Option<Figures> {
        Some(Figures { input, output, cached })
    }

    #[test]
    fn every_vendor_shape_is_read() {
        assert_eq!(
            read("application/json", ANTHROPIC_JSON.as_bytes(), 4096),
            f(1234, 56, 0)
        );
        assert_eq!(
            read("text/event-stream; charset=utf-8", ANTHROPIC_SSE.as_bytes(), 4096),
            f(1234, 56, 0)
        );
        assert_eq!(
            read("text/event-stream", OPENAI_RESPONSES_SSE.as_bytes(), 4096),
            f(1234, 56, 0)
        );
        assert_eq!(
            read("application/json; charset=utf-8", CHAT_JSON.as_bytes(), 4096),
            f(1234, 56, 0)
        );
        assert_eq!(read("text/event-stream", CHAT_SSE.as_bytes(), 4096), f(1234, 56, 1000));
        assert_eq!(read("text/event-stream", GEMINI_SSE.as_bytes(), 4096), f(1234, 56, 0));
    }

    #[test]
    fn sse_is_read_the_same_at_every_chunk_boundary() {
        for body in [ANTHROPIC_SSE, OPENAI_RESPONSES_SSE, CHAT_SSE, GEMINI_SSE] {
            let whole = read("text/event-stream", body.as_bytes(), usize::MAX);
            assert!(whole.is_some());
            let bytes = body.as_bytes();
            for cut in 1..bytes.len() {
                let mut m = SseMeter::default();
                m.feed(&bytes[..cut]);
                m.feed(&bytes[cut..]);
                assert_eq!(m.finish(), whole, "split at {cut}");
            }
            assert_eq!(read("text/event-stream", bytes, 1), whole, "one byte at a time");
            let crlf = body.replace("\r\n", "\n").replace('\n', "\r\n");
            assert_eq!(read("text/event-stream", crlf.as_bytes(), 7), whole, "CRLF");
            let cr = body.replace("\r\n", "\n").replace('\n', "\r");
            assert_eq!(read("text/event-stream", cr.as_bytes(), 5), whole, "CR");
        }
    }

    #[test]
    fn anthropic_cache_tokens_count_as_input_and_gemini_thoughts_as_output() {
        let a = r#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":4}}"#;
        assert_eq!(read("application/json", a.as_bytes(), 3), f(60, 4, 30));
        let g = r#"[{"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":5,"thoughtsTokenCount":7,"cachedContentTokenCount":40}},
                    {"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":9,"thoughtsTokenCount":7,"cachedContentTokenCount":40}}]"#;
        assert_eq!(read("application/json", g.as_bytes(), 4096), f(100, 16, 40));
    }

    #[test]
    fn multi_line_data_events_are_joined() {
        let body =
            "event: message_delta\ndata: {\"type\":\"message_delta\",\ndata: \"usage\":{\"output_tokens\":9}}\n\n";
        assert_eq!(read("text/event-stream", body.as_bytes(), 4096), f(0, 9, 0));
    }

    #[test]
    fn responses_without_usage_or_too_big_are_unmetered() {
        assert_eq!(
            read("application/json", br#"{"data":[{"id":"claude-sonnet-4-5"}]}"#, 4096),
            None
        );
        assert_eq!(read("application/json", b"not json", 4096), None);
        assert_eq!(read("text/event-stream", b"data: [DONE]\n\n", 4096), None);
        assert_eq!(read("application/json", br#"{"usage":null}"#, 4096), None);
        assert!(Meter::for_content_type(Some(b"text/plain")).is_none());
        assert!(Meter::for_content_type(None).is_none());
        assert!(Meter::for_content_type(Some(b"application/problem+json")).is_some());

        let mut big = String::from("{\"pad\":\"");
        big.push_str(&"x".repeat(MAX_HELD));
        big.push_str("\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}");
        assert_eq!(
            read("application/json", big.as_bytes(), 64 * 1024),
            None,
            "a JSON body over 1 MiB"
        );
        let long_line = format!("{ANTHROPIC_SSE}data: {big}\n\n");
        assert_eq!(
            read("text/event-stream", long_line.as_bytes(), 64 * 1024),
            None,
            "an SSE line over 1 MiB"
        );
    }

    #[test]
    fn the_run_adds_responses_up() {
        let mut run = MeteredUsage::default();
        Figures::add_to(f(1234, 56, 0), &mut run);
        Figures::add_to(f(10, 5, 3), &mut run);
        Figures::add_to(None, &mut run);
        assert_eq!(
            run,
            MeteredUsage {
                input_tokens: 1244,
                output_tokens: 61,
                cached_input_tokens: 3,
                responses: 2,
                unmetered_responses: 1
            }
        );
    }
}
