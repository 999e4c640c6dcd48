//! `dc-log`: the JSON log line format shared by the agent and the node (`--log-format
//! json`): one JSON object per line with `time` (RFC 3339, UTC), `level`, `target` and
//! `message` first, then the fields of the event's spans (outermost first) and of the event
//! itself (an inner one wins on a name clash). Stable field names for log pipelines.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub struct JsonLines;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), v.to_string().into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str(f.as_str()) {
                        fields.extend(m);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_else(|| "".into());
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let meta = event.metadata();
        let j = |v: &Value| serde_json::to_string(v).map_err(|_| fmt::Error);
        let mut line = format!(
            "{{\"time\":{},\"level\":{},\"target\":{},\"message\":{}",
            j(&time.into())?,
            j(&meta.level().as_str().into())?,
            j(&meta.target().into())?,
            j(&message)?,
        );
        for (k, v) in &fields {
            if !matches!(k.as_str(), "time" | "level" | "target") {
                line.push_str(&format!(",{}:{}", j(&k.as_str().into())?, j(v)?));
            }
        }
        line.push('}');
        let s = line;
        writeln!(w, "{s}")
    }
}

/// Installs the process's log output on stderr, filtered by the environment variable
/// `filter_env` (`info` when unset or invalid): human-readable text, coloured only on a
/// terminal, or one [`JsonLines`] object per line.
pub fn init(filter_env: &str, json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env(filter_env).unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        b.with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLines)
            .init()
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_object_per_line_with_stable_names_span_and_event_fields() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(super::JsonLines)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("upgrade", phase = "switching");
            let _g = span.enter();
            tracing::warn!(version = "2.0.0", attempts = 3u64, "standby \"ready\"");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "standby \"ready\"");
        assert_eq!(v["version"], "2.0.0");
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["phase"], "switching");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert!(
            v["target"].as_str().is_some_and(|t| t.contains("dc_log")),
            "{v}"
        );
        // The raw line leads with the four stable names, in this order.
        let at = |k: &str| lines[0].find(&format!("\"{k}\":")).unwrap();
        assert!(lines[0].starts_with("{\"time\":"), "{text}");
        assert!(
            at("time") < at("level") && at("level") < at("target") && at("target") < at("message")
        );
        assert!(
            at("message") < at("phase"),
            "span and event fields follow: {text}"
        );
    }
}
