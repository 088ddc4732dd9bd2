//! Logging for the command-line programs (`dalle-ort`, `shapes-eval`, `dalle-export`), the
//! same in all three.
//!
//! Why: by default a user sees warnings as `warning: message` lines, without timestamps, levels
//! in capitals or module paths, which belong to debugging; `-v` (info), `-vv` (debug), `-vvv`
//! (trace) or `RUST_LOG` switch to the full format. Colours only when stderr is a terminal, so
//! logs piped to a file or a CI log have no ANSI escapes.

use std::fmt;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber for `-v` given `verbose` times.
pub fn init(verbose: u8) {
    // ONNX Runtime's own info logs (session option dumps) only from -vv on.
    let level = match verbose {
        0 => "warn",
        1 => "info,ort=warn",
        2 => "debug",
        _ => "trace",
    };
    let from_env = EnvFilter::try_from_default_env().ok();
    let plain = verbose == 0 && from_env.is_none();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if plain {
        builder.event_format(Plain).init();
    } else {
        builder.init();
    }
}

/// `warning: message` (the event's fields, no time, target or spans).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let label = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "{label}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
