//! `dalle-ort serve`: the flags (each also read from a `DALLE_*` environment variable, as
//! container deployments expect) → [`dalle::serve::ServeOptions`]. The server itself lives in
//! the library ([`dalle::serve`]).

use super::{Global, load_ort, open};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use dalle::engine::MAX_CANDIDATES;
use dalle::ep::EpOptions;
use dalle::serve::worker::Loader;
use dalle::serve::{ApiKeys, ServeOptions, Settings, is_loopback};
use dalle_bundle::GraphRole;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Bundle directory (holds manifest.json)
    #[arg(long, env = "DALLE_MODEL", value_name = "DIR")]
    model: PathBuf,
    /// Model name listed by /v1/models and checked against requests' `model` (default: the
    /// bundle folder's name)
    #[arg(long, env = "DALLE_MODEL_NAME", value_name = "NAME")]
    model_name: Option<String>,
    /// Address to listen on (default 127.0.0.1). Without --api-key-file the server has no auth,
    /// so it stays on loopback unless a host is given explicitly
    #[arg(long, env = "DALLE_HOST", value_name = "ADDR")]
    host: Option<String>,
    /// Port (0: any free port; the bound address is printed on stdout)
    #[arg(long, env = "DALLE_PORT", default_value_t = 8000)]
    port: u16,
    /// Most decoder rows per step, shared by every running request (a candidate takes 1 row, 2
    /// with guidance; default: the decoder's batch range)
    #[arg(long, env = "DALLE_MAX_BATCH_ROWS", value_name = "ROWS")]
    max_batch_rows: Option<usize>,
    /// Most requests waiting for admission; more are answered 429 with Retry-After
    #[arg(long, env = "DALLE_MAX_QUEUE", default_value_t = 64, value_name = "N")]
    max_queue: usize,
    /// Most images (`n`) and sampled candidates (`candidates`) per request
    #[arg(
        long,
        env = "DALLE_MAX_CANDIDATES",
        default_value_t = 10,
        value_name = "N"
    )]
    max_candidates: usize,
    /// Seconds a request may take from acceptance to its last image (then 504; rows leave)
    #[arg(long, env = "DALLE_REQUEST_TIMEOUT", default_value = "300", value_parser = seconds, value_name = "S")]
    request_timeout: Duration,
    /// Seconds SIGTERM/SIGINT waits for in-flight requests before failing them (then exit 0)
    #[arg(long, env = "DALLE_SHUTDOWN_TIMEOUT", default_value = "30", value_parser = seconds, value_name = "S")]
    shutdown_timeout: Duration,
    /// Largest request body, uploads included (then 413)
    #[arg(long, env = "DALLE_MAX_BODY_BYTES", default_value_t = 8 << 20, value_name = "BYTES")]
    max_body_bytes: usize,
    /// Largest width or height of an uploaded image, checked before decoding (then 413)
    #[arg(
        long,
        env = "DALLE_MAX_IMAGE_SIDE",
        default_value_t = 4096,
        value_name = "PX"
    )]
    max_image_side: u32,
    /// File of bearer API keys, one per line (`#` comments); without it there is no auth
    #[arg(long, env = "DALLE_API_KEY_FILE", value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Log format (stderr)
    #[arg(long, env = "DALLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Seconds an image of `response_format: "url"` stays downloadable
    #[arg(long, env = "DALLE_FILE_TTL", default_value = "3600", value_parser = seconds, value_name = "S")]
    file_ttl: Duration,
    /// Most images kept for URLs (oldest dropped first; 0 turns URLs off)
    #[arg(long, env = "DALLE_MAX_FILES", default_value_t = 256, value_name = "N")]
    max_files: usize,
    /// Testing and load experiments only: sleep this long after every engine step
    #[arg(long, env = "DALLE_STEP_DELAY_MS", default_value_t = 0, hide = true)]
    step_delay_ms: u64,
    /// Testing only: report engine step N as failed, once (the 500 path and the reload)
    #[arg(long, env = "DALLE_FAIL_STEP", hide = true)]
    fail_step: Option<u64>,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0) {
        return Err(format!("{s} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn log_dispatch(format: LogFormat, verbose: u8) -> tracing::Dispatch {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "info,ort=warn",
        1 => "debug,ort=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing::Dispatch::new(builder.finish()),
        LogFormat::Json => tracing::Dispatch::new(builder.json().finish()),
    }
}

pub fn run(g: &Global, options: EpOptions, args: ServeArgs) -> Result<()> {
    if args.max_queue == 0 {
        bail!("invalid max-queue: --max-queue must be at least 1");
    }
    if args.max_candidates == 0 || args.max_candidates > MAX_CANDIDATES {
        bail!("invalid max-candidates: --max-candidates must be in 1..={MAX_CANDIDATES}");
    }
    if args.max_batch_rows == Some(0) {
        bail!("invalid max-batch-rows: --max-batch-rows must be at least 1");
    }
    let dispatch = log_dispatch(args.log_format, g.verbose);
    let bundle = open(&args.model, options.clone())?;
    bundle
        .manifest()
        .graph(GraphRole::Decoder)
        .context("`serve` needs a bundle with a transformer decoder")?;
    drop(bundle);
    let keys = match &args.api_key_file {
        Some(path) => Some(ApiKeys::from_file(path)?),
        None => None,
    };
    let host = args.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    if keys.is_none() && !is_loopback(&host) {
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::warn!(
                "serving on {host} without authentication (no --api-key-file): anyone who can \
                 reach it can generate"
            );
        });
    }
    load_ort(g)?;
    let model_name = args.model_name.clone().unwrap_or_else(|| {
        args.model
            .canonicalize()
            .ok()
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dalle".into())
    });
    let settings = Settings {
        model_name,
        max_batch_rows: args.max_batch_rows,
        max_queue: args.max_queue,
        max_candidates: args.max_candidates,
        request_timeout: args.request_timeout,
        shutdown_timeout: args.shutdown_timeout,
        max_body_bytes: args.max_body_bytes,
        max_image_side: args.max_image_side,
        file_ttl: args.file_ttl,
        max_files: args.max_files,
        step_delay: Duration::from_millis(args.step_delay_ms),
        fail_step: args.fail_step,
    };
    let dir = args.model.clone();
    let for_loader = settings.clone();
    let loader: Loader =
        Box::new(move || dalle::serve::load::load(&dir, options.clone(), &for_loader));
    dalle::serve::run(ServeOptions {
        host,
        port: args.port,
        settings,
        keys,
        loader,
        dispatch: Some(dispatch),
    })?;
    Ok(())
}
