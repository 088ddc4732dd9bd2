//! Load generator for `dalle-ort serve` (loopback only, bounded counts and durations):
//! starts the real server on a bundle, drives it over HTTP with streamed requests (one partial
//! image each, so time to first partial image and end-to-end latency come from one request),
//! and prints a Markdown report.
//!
//! Scenarios, each bounded:
//! 1. closed loop at 1, 4 and 16 concurrent clients (`SERVE_LEVELS`, `SERVE_PER_CLIENT`
//!    requests per client): images/s, p50/p95/p99 latency and time to first partial image;
//! 2. offline `dalle-ort generate -n C --batch C` at the largest level's batch size, for the
//!    throughput ratio;
//! 3. open loop at a fixed arrival rate (`SERVE_RATE` requests/s for `SERVE_RATE_SECS`);
//! 4. how many engine steps requests waited before their first token (the server's
//!    `dalle_request_steps_to_start` histogram), and the failure count below the queue limit;
//! 5. with `SERVE_SOAK_SECS`, a soak at 4 clients sampling the server's RSS every
//!    `SERVE_RSS_EVERY` seconds.
//!
//! ```sh
//! cargo bench --bench serve_load                     # the shapes bundle, exported here
//! SERVE_BUNDLE=DIR SERVE_SOAK_SECS=600 cargo bench --bench serve_load
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../python-free-tests/cli/export_bundle.rs"]
mod export_bundle;

const PROMPTS: [&str; 4] = [
    "a large red circle on the left",
    "a blue square above a yellow triangle",
    "a small green triangle at the top",
    "there is a small white square in the middle",
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bundle: &Path, extra: &[String], log: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
        .current_dir(repo())
        .args(["--ep", "cpu", "serve", "--model"])
        .arg(bundle)
        .args(["--port", "0", "--max-queue", "256"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("the server prints its address")
        .to_owned();
    assert!(
        base.starts_with("http://127.") || base.starts_with("http://[::1]"),
        "loopback only: {base}"
    );
    Server { child, base }
}

/// One streamed request's timings.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ok: bool,
    status: u16,
    ttfp: Option<f64>,
    e2e: f64,
}

async fn one(c: &reqwest::Client, base: &str, i: usize, guided: bool, stream: bool) -> Sample {
    let body = json!({
        "prompt": PROMPTS[i % PROMPTS.len()],
        "n": 1,
        "seed": i,
        "top_k": 16,
        "cond_scale": if guided { 3.0 } else { 1.0 },
        "stream": stream,
        "partial_images": if stream { 1 } else { 0 },
    });
    let started = Instant::now();
    let r = match c
        .post(format!("{base}/v1/images/generations"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            return Sample {
                ok: false,
                status: 0,
                ttfp: None,
                e2e: started.elapsed().as_secs_f64(),
            };
        }
    };
    let status = r.status().as_u16();
    if status != 200 {
        return Sample {
            ok: false,
            status,
            ttfp: None,
            e2e: started.elapsed().as_secs_f64(),
        };
    }
    if !stream {
        let ok = r
            .json::<Value>()
            .await
            .is_ok_and(|v| v["data"][0]["b64_json"].is_string());
        return Sample {
            ok,
            status,
            ttfp: None,
            e2e: started.elapsed().as_secs_f64(),
        };
    }
    let mut ttfp = None;
    let mut ok = false;
    let mut events = r.bytes_stream().eventsource();
    while let Some(e) = events.next().await {
        let Ok(e) = e else { break };
        match e.event.as_str() {
            "image_generation.partial_image" if ttfp.is_none() => {
                ttfp = Some(started.elapsed().as_secs_f64());
            }
            "image_generation.completed" => ok = true,
            "error" => break,
            _ => {}
        }
    }
    Sample {
        ok,
        status,
        ttfp,
        e2e: started.elapsed().as_secs_f64(),
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(samples: &[Sample]) -> (usize, usize, [f64; 3], [f64; 3]) {
    let ok = samples.iter().filter(|s| s.ok).count();
    let failed = samples.len() - ok;
    let mut e2e: Vec<f64> = samples.iter().filter(|s| s.ok).map(|s| s.e2e).collect();
    let mut ttfp: Vec<f64> = samples.iter().filter_map(|s| s.ttfp).collect();
    e2e.sort_by(f64::total_cmp);
    ttfp.sort_by(f64::total_cmp);
    let p = |v: &[f64]| [pct(v, 50.0), pct(v, 95.0), pct(v, 99.0)];
    (ok, failed, p(&e2e), p(&ttfp))
}

fn row(name: &str, samples: &[Sample], wall: f64, within2: (f64, f64)) -> String {
    let (ok, failed, e2e, ttfp) = summary(samples);
    let statuses: Vec<String> = samples
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.status.to_string())
        .collect();
    format!(
        "| {name} | {ok} | {failed}{} | {:.2} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} / {} | {wall:.1} |",
        if statuses.is_empty() {
            String::new()
        } else {
            format!(" ({})", statuses.join(","))
        },
        ok as f64 / wall,
        e2e[0] * 1e3,
        e2e[1] * 1e3,
        e2e[2] * 1e3,
        ttfp[0] * 1e3,
        ttfp[1] * 1e3,
        ttfp[2] * 1e3,
        within2.0,
        within2.1,
    )
}

async fn closed_loop(
    c: &reqwest::Client,
    base: &str,
    clients: usize,
    per_client: usize,
    guided: bool,
    stream: bool,
) -> (Vec<Sample>, f64) {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|k| {
            let (c, base) = (c.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut out = vec![];
                for j in 0..per_client {
                    out.push(one(&c, &base, k * per_client + j, guided, stream).await);
                }
                out
            })
        })
        .collect();
    let mut samples = vec![];
    for h in handles {
        samples.extend(h.await.unwrap());
    }
    (samples, started.elapsed().as_secs_f64())
}

async fn open_loop(
    c: &reqwest::Client,
    base: &str,
    rate: f64,
    secs: f64,
    guided: bool,
) -> (Vec<Sample>, f64) {
    let started = Instant::now();
    let count = (rate * secs).floor() as usize;
    let mut handles = vec![];
    for i in 0..count {
        let at = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (c, base) = (c.clone(), base.to_owned());
        handles.push(tokio::spawn(async move {
            one(&c, &base, 10_000 + i, guided, true).await
        }));
    }
    let mut samples = vec![];
    for h in handles {
        samples.push(h.await.unwrap());
    }
    (samples, started.elapsed().as_secs_f64())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The server's histogram `name` as `(le, cumulative count)`.
fn histogram(text: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, v) = rest.split_once("\"} ")?;
            Some((le.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// `(requests that started within 2 steps, requests started)` so far, from the server.
async fn started_within_2(c: &reqwest::Client, base: &str) -> (f64, f64) {
    let Ok(r) = c.get(format!("{base}/metrics")).send().await else {
        return (f64::NAN, f64::NAN);
    };
    let text = r.text().await.unwrap_or_default();
    let h = histogram(&text, "dalle_request_steps_to_start");
    let get = |le: &str| h.iter().find(|(l, _)| l == le).map_or(f64::NAN, |x| x.1);
    (get("2.0"), get("+Inf"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Offline `generate -n C --batch C`, `runs` times: images/s of the median `timings.total_ms` of
/// its sidecar (admission to decoded pixels: sessions, PNG writing and process start excluded).
fn offline(
    bundle: &Path,
    batch: usize,
    guided: bool,
    out: &Path,
    runs: usize,
) -> Option<(f64, f64)> {
    let mut ms = vec![];
    for run in 0..runs {
        let dir = out.join(run.to_string());
        let o = Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
            .current_dir(repo())
            .args(["--ep", "cpu", "generate", "--model"])
            .arg(bundle)
            .arg(PROMPTS[0])
            .args(["-n", &batch.to_string(), "--batch", &batch.to_string()])
            .args(["--top-k", "16", "--seed", &run.to_string()])
            .args(["--cond-scale", if guided { "3" } else { "1" }])
            .arg("-o")
            .arg(&dir)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!("generate failed: {}", String::from_utf8_lossy(&o.stderr));
            return None;
        }
        let sidecar: Value =
            serde_json::from_slice(&std::fs::read(dir.join("generation.json")).ok()?).ok()?;
        ms.push(sidecar["timings"]["total_ms"].as_f64()?);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    Some((batch as f64 / (median / 1e3), median))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let work = tempfile::tempdir().unwrap();
    let bundle = match std::env::var("SERVE_BUNDLE") {
        Ok(b) => PathBuf::from(b),
        Err(_) => {
            let models = repo().join("models/shapes");
            export_bundle::export_with(
                &models.join("dalle.pt"),
                &models.join("tokenizer.json"),
                Some(&models.join("clip")),
                &work.path().join("shapes"),
                DecoderOptions {
                    kv_cache: KvCacheLayout::InPlace,
                    ..Default::default()
                },
            )
        }
    };
    let levels: Vec<usize> = std::env::var("SERVE_LEVELS")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let per_client: usize = env_or("SERVE_PER_CLIENT", 6);
    let guided = env_or("SERVE_GUIDED", 0u8) == 1;
    let rate: f64 = env_or("SERVE_RATE", 0.0);
    let rate_secs: f64 = env_or("SERVE_RATE_SECS", 20.0);
    let soak: f64 = env_or("SERVE_SOAK_SECS", 0.0);
    let rss_every: f64 = env_or("SERVE_RSS_EVERY", 10.0);
    let max_rows = levels.iter().max().copied().unwrap_or(16) * if guided { 2 } else { 1 };
    let log = work.path().join("server.log");
    let server = start_server(
        &bundle,
        &["--max-batch-rows".into(), max_rows.to_string()],
        &log,
    );
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let base = server.base.clone();
    let ready = Instant::now();
    while c
        .get(format!("{base}/ready"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "server not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = server.child.id();
    let rss_start = rss_kib(pid);
    // Warm-up: one request per level's worth of clients, not recorded.
    closed_loop(&c, &base, 2, 1, guided, true).await;

    println!("bundle: {}", bundle.display());
    println!(
        "settings: n 1 per request, top_k 16, cond_scale {}, stream with 1 partial image, \
         --max-batch-rows {max_rows}, {per_client} requests per client",
        if guided { 3 } else { 1 }
    );
    println!();
    println!(
        "| scenario | ok | failed | images/s | latency p50 / p95 / p99 (ms) | first partial p50 / p95 / p99 (ms) | started within 2 steps / started | wall (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut top = None;
    let delta = |a: (f64, f64), b: (f64, f64)| (b.0 - a.0, b.1 - a.1);
    for &clients in &levels {
        let before = started_within_2(&c, &base).await;
        let (samples, wall) = closed_loop(&c, &base, clients, per_client, guided, true).await;
        let d = delta(before, started_within_2(&c, &base).await);
        println!(
            "{}",
            row(&format!("{clients} clients, streamed"), &samples, wall, d)
        );
    }
    if let Some(&clients) = levels.iter().max() {
        let before = started_within_2(&c, &base).await;
        let (samples, wall) = closed_loop(&c, &base, clients, per_client, guided, false).await;
        let d = delta(before, started_within_2(&c, &base).await);
        println!(
            "{}",
            row(&format!("{clients} clients, plain JSON"), &samples, wall, d)
        );
        let ok = samples.iter().filter(|s| s.ok).count();
        top = Some((clients, ok as f64 / wall));
    }
    if rate > 0.0 {
        let before = started_within_2(&c, &base).await;
        let (samples, wall) = open_loop(&c, &base, rate, rate_secs, guided).await;
        let d = delta(before, started_within_2(&c, &base).await);
        println!(
            "{}",
            row(
                &format!("open loop {rate} req/s for {rate_secs} s"),
                &samples,
                wall,
                d
            )
        );
    }
    println!();
    if let Some((clients, served)) = top {
        let runs: usize = env_or("SERVE_OFFLINE_RUNS", 5);
        match offline(&bundle, clients, guided, &work.path().join("offline"), runs) {
            Some((off, median_ms)) => println!(
                "offline `generate -n {clients} --batch {clients}` (median of {runs}: {median_ms:.1} \
                 ms): {off:.2} images/s; serve at {clients} clients (plain JSON): {served:.2} \
                 images/s = {:.2}x offline",
                served / off
            ),
            None => println!("offline generate: failed to run or parse"),
        }
    }
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let h = histogram(&text, "dalle_request_steps_to_start");
    let total = metric(&text, "dalle_request_steps_to_start_count");
    let within2 = h
        .iter()
        .find(|(le, _)| le == "2.0")
        .map_or(f64::NAN, |x| x.1);
    println!(
        "steps before the first token (server histogram): {within2} of {total} requests within 2 \
         steps; buckets {h:?}"
    );
    println!(
        "server: {} rejected (queue_full), mean step {:.2} ms over {} steps, mean rows/step {:.1}",
        metric(
            &text,
            "dalle_requests_rejected_total{reason=\"queue_full\"}"
        ),
        metric(&text, "dalle_step_duration_seconds_sum")
            / metric(&text, "dalle_step_duration_seconds_count").max(1.0)
            * 1e3,
        metric(&text, "dalle_step_duration_seconds_count"),
        metric(&text, "dalle_batch_rows_sum") / metric(&text, "dalle_batch_rows_count").max(1.0),
    );
    if soak > 0.0 {
        println!();
        println!("soak: 4 clients for {soak} s, server RSS every {rss_every} s");
        let stop = Instant::now() + Duration::from_secs_f64(soak);
        let clients: Vec<_> = (0..4)
            .map(|k| {
                let (c, base) = (c.clone(), base.clone());
                tokio::spawn(async move {
                    let mut out = vec![];
                    let mut i = 0;
                    while Instant::now() < stop {
                        out.push(one(&c, &base, 20_000 + k * 100_000 + i, guided, true).await);
                        i += 1;
                    }
                    out
                })
            })
            .collect();
        let started = Instant::now();
        let mut rss = vec![];
        while Instant::now() < stop {
            rss.push((started.elapsed().as_secs_f64(), rss_kib(pid).unwrap_or(0)));
            tokio::time::sleep(Duration::from_secs_f64(rss_every)).await;
        }
        let mut samples = vec![];
        for h in clients {
            samples.extend(h.await.unwrap());
        }
        rss.push((started.elapsed().as_secs_f64(), rss_kib(pid).unwrap_or(0)));
        println!(
            "{}",
            row(
                "soak, 4 clients",
                &samples,
                started.elapsed().as_secs_f64(),
                (f64::NAN, f64::NAN)
            )
        );
        let line: Vec<String> = rss
            .iter()
            .map(|(t, kib)| format!("{t:.0}s:{:.1}", *kib as f64 / 1024.0))
            .collect();
        println!(
            "RSS MiB (before load {:.1}): {}",
            rss_start.unwrap_or(0) as f64 / 1024.0,
            line.join(" ")
        );
        let after_1min: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| *t >= 60.0)
            .map(|x| x.1)
            .collect();
        if let (Some(min), Some(max)) = (after_1min.iter().min(), after_1min.iter().max()) {
            println!(
                "RSS after the first minute: min {:.1} MiB, max {:.1} MiB, spread {:.1}%",
                *min as f64 / 1024.0,
                *max as f64 / 1024.0,
                (*max as f64 / *min as f64 - 1.0) * 100.0
            );
        }
    }
    drop(server);
}
