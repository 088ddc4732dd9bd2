//! `dalle-ort serve` over real HTTP on loopback, on the shipped shapes model exported with
//! `--kv-cache in-place` (as `scripts/demo.sh` does), driven by `reqwest` and
//! `eventsource-stream` against the real binary: every endpoint and error status, SSE parsed
//! event by event, disconnects cancelling rows (seen in `/metrics`), a full queue answering 429,
//! SIGTERM draining in-flight requests and exiting 0, a seeded request byte-identical alone and
//! admitted into a busy batch, concurrent clients, auth and environment-variable configuration,
//! and an engine failure answered with 500 while the server lives on; and stream previews on a
//! min-dalle bundle (`fixtures/min_dalle_small` + `fixtures/min_dalle_pipeline`'s detokenizer).
//!
//! Each test starts its own server on a port the OS picks (`--port 0`; the server prints its
//! address). `--step-delay-ms` (hidden, testing only) slows steps where a test needs requests to
//! overlap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "export_bundle.rs"]
mod export_bundle;

const PROMPT: &str = "a large red circle on the left";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The shapes bundle, exported once per test process.
fn bundle() -> &'static Path {
    static BUNDLE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = BUNDLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let models = repo().join("models/shapes");
        let path = export_bundle::export_with(
            &models.join("dalle.pt"),
            &models.join("tokenizer.json"),
            Some(&models.join("clip")),
            &dir.path().join("shapes"),
            DecoderOptions {
                kv_cache: KvCacheLayout::InPlace,
                ..Default::default()
            },
        );
        (dir, path)
    });
    path
}

/// The min-dalle bundle, exported once per test process.
fn min_dalle_bundle() -> &'static Path {
    static BUNDLE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = BUNDLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = repo().join("python-free-tests/fixtures");
        let path = export_bundle::export_min_dalle(
            &fixtures,
            &dir.path().join("min-dalle"),
            dalle_export::kv_cache::KvCacheLayout::Concat,
            true,
        );
        (dir, path)
    });
    path
}

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_with(args, &[], true)
    }

    /// Starts `dalle-ort --ep cpu serve --port 0 ARGS` (plus `--model` unless `with_model` is
    /// false, for tests that set `DALLE_MODEL`) and waits until it is ready.
    fn start_with(args: &[&str], env: &[(&str, String)], with_model: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dalle-ort"));
        cmd.current_dir(repo()).args(["--ep", "cpu", "serve"]);
        if with_model {
            cmd.arg("--model").arg(bundle()).args(["--port", "0"]);
        }
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the server did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let server = Server {
            child,
            base,
            log,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if status_of(&self.base, "/ready") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server never became ready:\n{}", self.log());
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a plain blocking `GET` (readiness polling outside any runtime).
fn status_of(base: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn get_json(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_json(c: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Asserts OpenAI's error object with all four keys, and returns it.
fn error_of(body: &Value) -> &Value {
    let e = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error object lacks {key}: {body}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    e
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The PNG of data item `i`, checked to be a 32×32 image.
fn png_of(item: &Value) -> Vec<u8> {
    let bytes = b64(item["b64_json"].as_str().expect("b64_json"));
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    bytes
}

fn seeded(seed: u64, n: usize) -> Value {
    json!({"prompt": PROMPT, "n": n, "seed": seed, "top_k": 16, "cond_scale": 3})
}

async fn metrics(c: &reqwest::Client, s: &Server) -> String {
    c.get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a sample line (`name{labels} value`), 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `pred` holds (10 s at most).
async fn until_metrics(c: &reqwest::Client, s: &Server, what: &str, pred: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        let text = metrics(c, s).await;
        if pred(&text) {
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            panic!("metrics never showed {what}:\n{text}\nlog:\n{}", s.log());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_error_statuses() {
    let s = Server::start(&["--max-candidates", "4", "--max-body-bytes", "65536"]);
    let c = client();
    let name = bundle().file_name().unwrap().to_str().unwrap().to_owned();

    let (st, body) = get_json(&c, s.url("/health")).await;
    assert_eq!((st, &body["status"]), (200, &json!("ok")));
    let (st, body) = get_json(&c, s.url("/ready")).await;
    assert_eq!((st, &body["status"]), (200, &json!("ready")));
    let (st, body) = get_json(&c, s.url("/v1/models")).await;
    assert_eq!(st, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], name.as_str());
    assert_eq!(body["data"][0]["size"], "32x32");
    let (st, _) = get_json(&c, s.url(&format!("/v1/models/{name}"))).await;
    assert_eq!(st, 200);
    let (st, body) = get_json(&c, s.url("/v1/models/dall-e-3")).await;
    assert_eq!(
        (st, &error_of(&body)["code"]),
        (404, &json!("model_not_found"))
    );
    let (st, body) = get_json(&c, s.url("/v1/nothing")).await;
    assert_eq!(st, 404);
    assert_eq!(error_of(&body)["type"], "invalid_request_error");
    let r = c.post(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // A generation: data, seed, usage, request id.
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&seeded(11, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first = png_of(&data[0]);
    png_of(&data[1]);
    assert_eq!(data[0]["seed"], 11);
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["usage"]["output_tokens"], 128, "2 × 64 image tokens");
    assert_eq!(
        body["usage"]["total_tokens"].as_u64().unwrap(),
        body["usage"]["input_tokens"].as_u64().unwrap() + 128
    );
    assert!(
        body["usage"]["input_tokens_details"]["text_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // The same request as a URL: the file holds the same bytes.
    let mut url_req = seeded(11, 2);
    url_req["response_format"] = json!("url");
    let (st, body) = post_json(&c, s.url("/v1/images/generations"), &url_req).await;
    assert_eq!(st, 200, "{body}");
    let url = body["data"][0]["url"].as_str().unwrap();
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().as_ref(), first.as_slice());
    let (st, _) = get_json(&c, s.url("/v1/images/files/0123.png")).await;
    assert_eq!(st, 404);

    // CLIP reranking: 3 candidates, the best 1 returned with its score.
    let mut rr = seeded(5, 1);
    rr["candidates"] = json!(3);
    let (st, body) = post_json(&c, s.url("/v1/images/generations"), &rr).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert!(body["data"][0]["clip_score"].as_f64().is_some());
    assert!(body["data"][0]["candidate"].as_u64().unwrap() < 3);
    assert_eq!(body["usage"]["output_tokens"], 192);

    // 400s name the field.
    for (req, param) in [
        (json!({"n": 1}), "prompt"),
        (json!({"prompt": PROMPT, "n": 5}), "n"),
        (json!({"prompt": PROMPT, "size": "1024x1024"}), "size"),
        (json!({"prompt": PROMPT, "top_p": 1.5}), "top_p"),
        (json!({"prompt": PROMPT, "temperature": 0}), "temperature"),
        (
            json!({"prompt": PROMPT, "partial_images": 9}),
            "partial_images",
        ),
        (
            json!({"prompt": PROMPT, "response_format": "gif"}),
            "response_format",
        ),
    ] {
        let (st, body) = post_json(&c, s.url("/v1/images/generations"), &req).await;
        assert_eq!(st, 400, "{req}: {body}");
        assert_eq!(error_of(&body)["param"], param, "{req}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let r = c
        .post(s.url("/v1/images/generations"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    error_of(&r.json().await.unwrap());
    // 404 for another model, 413 for a body over --max-body-bytes.
    let mut other = seeded(1, 1);
    other["model"] = json!("dall-e-2");
    let (st, body) = post_json(&c, s.url("/v1/images/generations"), &other).await;
    assert_eq!((st, &error_of(&body)["param"]), (404, &json!("model")));
    let big = json!({"prompt": "x".repeat(70_000)});
    let (st, body) = post_json(&c, s.url("/v1/images/generations"), &big).await;
    assert_eq!(st, 413);
    error_of(&body);

    // Edits: image priming keeps the top rows (usage counts them), errors name the field.
    let form = |seed: u64, rows: &str| {
        reqwest::multipart::Form::new()
            .part(
                "image",
                reqwest::multipart::Part::bytes(first.clone())
                    .file_name("in.png")
                    .mime_str("image/png")
                    .unwrap(),
            )
            .text("prompt", PROMPT)
            .text("init_rows", rows.to_owned())
            .text("seed", seed.to_string())
            .text("top_k", "16")
    };
    let mut primed = vec![];
    for seed in [1u64, 2] {
        let r = c
            .post(s.url("/v1/images/edits"))
            .multipart(form(seed, "4"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["usage"]["input_tokens_details"]["image_tokens"], 32);
        assert_eq!(body["usage"]["output_tokens"], 32);
        primed.push(
            image::load_from_memory(&png_of(&body["data"][0]))
                .unwrap()
                .to_rgb8(),
        );
    }
    let diff = |y0: u32, y1: u32| -> f64 {
        let mut d = 0.0;
        for y in y0..y1 {
            for x in 0..32 {
                for ch in 0..3 {
                    d += (f64::from(primed[0].get_pixel(x, y)[ch])
                        - f64::from(primed[1].get_pixel(x, y)[ch]))
                    .abs();
                }
            }
        }
        d / f64::from((y1 - y0) * 32 * 3)
    };
    assert!(
        diff(0, 8) <= diff(24, 32),
        "the primed top rows agree more than the sampled bottom rows ({} vs {})",
        diff(0, 8),
        diff(24, 32)
    );
    let r = c
        .post(s.url("/v1/images/edits"))
        .multipart(form(1, "8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(&r.json().await.unwrap())["param"], "init_rows");
    let r = c
        .post(s.url("/v1/images/edits"))
        .multipart(reqwest::multipart::Form::new().text("prompt", PROMPT))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(&r.json().await.unwrap())["param"], "image");
    let bad = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(b"not a png".to_vec()),
        )
        .text("prompt", PROMPT);
    let r = c
        .post(s.url("/v1/images/edits"))
        .multipart(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(&r.json().await.unwrap())["param"], "image");

    let text = metrics(&c, &s).await;
    assert!(
        metric(
            &text,
            "dalle_http_requests_total{route=\"/v1/images/generations\",status=\"200\"}"
        ) >= 3.0,
        "{text}"
    );
    assert!(
        metric(&text, "dalle_images_generated_total") >= 7.0,
        "{text}"
    );
    assert!(text.contains("dalle_step_duration_seconds_bucket"));
    assert!(text.contains("dalle_batch_rows_bucket"));
}

/// Reads an SSE response into `(event name, JSON data)` pairs.
async fn sse_events(r: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut out = vec![];
    let mut events = r.bytes_stream().eventsource();
    while let Some(e) = events.next().await {
        let e = e.unwrap();
        out.push((e.event.clone(), serde_json::from_str(&e.data).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_partial_images_then_completed_ones() {
    let s = Server::start(&[]);
    let c = client();
    let (st, plain) = post_json(&c, s.url("/v1/images/generations"), &seeded(21, 2)).await;
    assert_eq!(st, 200);
    let mut req = seeded(21, 2);
    req["stream"] = json!(true);
    req["partial_images"] = json!(3);
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&req)
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    let mut partials = [vec![], vec![]];
    let mut completed = vec![];
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "the event name is the JSON type"
        );
        for key in [
            "created_at",
            "size",
            "quality",
            "background",
            "output_format",
        ] {
            assert!(data.get(key).is_some(), "{name} lacks {key}");
        }
        assert_eq!(data["size"], "32x32");
        match name.as_str() {
            "image_generation.partial_image" => {
                let i = data["image_index"].as_u64().unwrap() as usize;
                assert!(completed.is_empty(), "partials come before the images");
                partials[i].push(data["partial_image_index"].as_u64().unwrap());
                png_of(data);
            }
            "image_generation.completed" => {
                assert_eq!(data["usage"]["output_tokens"], 128);
                completed.push(data.clone());
            }
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert_eq!(partials, [vec![0, 1, 2], vec![0, 1, 2]]);
    assert_eq!(completed.len(), 2);
    for (i, done) in completed.iter().enumerate() {
        assert_eq!(done["image_index"], i);
        assert_eq!(
            png_of(done),
            png_of(&plain["data"][i]),
            "streamed and plain images are the same bytes"
        );
    }
    // Without partial images: just the completed events.
    let mut req = seeded(21, 1);
    req["stream"] = json!(true);
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&req)
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "image_generation.completed");
    // An edit streams under `image_edit.*`.
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(png_of(&plain["data"][0])).file_name("in.png"),
        )
        .text("prompt", PROMPT)
        .text("stream", "true")
        .text("partial_images", "1")
        .text("seed", "3");
    let r = c
        .post(s.url("/v1/images/edits"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let names: Vec<String> = sse_events(r).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["image_edit.partial_image", "image_edit.completed"]);
    let text = metrics(&c, &s).await;
    assert!(metric(&text, "dalle_time_to_first_partial_image_seconds_count") >= 1.0);
    assert_eq!(metric(&text, "dalle_partial_images_total"), 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_a_504_and_its_rows_leave() {
    let s = Server::start(&["--request-timeout", "0.4", "--step-delay-ms", "25"]);
    let c = client();
    let (st, body) = post_json(&c, s.url("/v1/images/generations"), &seeded(1, 1)).await;
    assert_eq!(st, 504, "{body}");
    assert_eq!(error_of(&body)["code"], "timeout");
    // A stream that times out ends with an `error` event carrying the same error object.
    let mut req = seeded(2, 1);
    req["stream"] = json!(true);
    req["partial_images"] = json!(3);
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&req)
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(error_of(data)["code"], "timeout");
    until_metrics(&c, &s, "the rows leaving", |t| {
        metric(t, "dalle_requests_cancelled_total{reason=\"timeout\"}") == 2.0
            && metric(t, "dalle_active_rows") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_cancels_the_rows_within_a_step() {
    let s = Server::start(&["--step-delay-ms", "25"]);
    let c = client();
    // A stream dropped after its first partial image.
    let mut req = seeded(3, 2);
    req["stream"] = json!(true);
    req["partial_images"] = json!(3);
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&req)
        .send()
        .await
        .unwrap();
    let mut events = r.bytes_stream().eventsource();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.event, "image_generation.partial_image");
    let text = metrics(&c, &s).await;
    assert_eq!(
        metric(&text, "dalle_active_rows"),
        4.0,
        "2 candidates × 2 rows (guidance)"
    );
    drop(events);
    until_metrics(&c, &s, "the stream's rows leaving", |t| {
        metric(t, "dalle_requests_cancelled_total{reason=\"disconnect\"}") == 1.0
            && metric(t, "dalle_active_rows") == 0.0
    })
    .await;
    let tokens = metric(&metrics(&c, &s).await, "dalle_image_tokens_generated_total");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metric(&metrics(&c, &s).await, "dalle_image_tokens_generated_total"),
        tokens,
        "no token is sampled for a cancelled request"
    );
    assert!(tokens < 2.0 * 64.0, "cancelled before the end: {tokens}");

    // A plain request whose client gives up.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let r = impatient
        .post(s.url("/v1/images/generations"))
        .json(&seeded(4, 1))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    until_metrics(&c, &s, "the plain request's rows leaving", |t| {
        metric(t, "dalle_requests_cancelled_total{reason=\"disconnect\"}") == 2.0
            && metric(t, "dalle_active_rows") == 0.0
    })
    .await;
    // The server is fine afterwards.
    let (st, _) = post_json(&c, s.url("/v1/images/generations"), &seeded(4, 1)).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let s = Server::start(&[
        "--max-batch-rows",
        "2",
        "--max-queue",
        "1",
        "--step-delay-ms",
        "15",
    ]);
    let c = client();
    let url = s.url("/v1/images/generations");
    let a = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post_json(&c, url, &seeded(1, 1)).await }
    });
    until_metrics(&c, &s, "A running", |t| {
        metric(t, "dalle_running_requests") == 1.0
    })
    .await;
    let b = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post_json(&c, url, &seeded(2, 1)).await }
    });
    until_metrics(&c, &s, "B queued", |t| metric(t, "dalle_queue_size") == 1.0).await;
    let r = c.post(&url).json(&seeded(3, 1)).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after));
    assert!(r.headers().contains_key("retry-after-ms"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_of(&body)["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Below the limit nothing fails.
    for h in [a, b] {
        let (st, body) = h.await.unwrap();
        assert_eq!(st, 200, "{body}");
    }
    let text = metrics(&c, &s).await;
    assert_eq!(
        metric(
            &text,
            "dalle_requests_rejected_total{reason=\"queue_full\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let mut s = Server::start(&["--step-delay-ms", "20", "--shutdown-timeout", "30"]);
    let c = client();
    let url = s.url("/v1/images/generations");
    let plain = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post_json(&c, url, &seeded(8, 1)).await }
    });
    let streamed = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        let mut req = seeded(9, 1);
        req["stream"] = json!(true);
        req["partial_images"] = json!(1);
        async move { sse_events(c.post(url).json(&req).send().await.unwrap()).await }
    });
    until_metrics(&c, &s, "both running", |t| {
        metric(t, "dalle_running_requests") == 2.0
    })
    .await;
    s.signal("TERM");
    let started = Instant::now();
    loop {
        let (st, body) = get_json(&c, s.url("/ready")).await;
        if st == 503 {
            assert_eq!(error_of(&body)["code"], "shutting_down");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "/ready never went 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (st, body) = post_json(&c, url.clone(), &seeded(10, 1)).await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(error_of(&body)["type"], "service_unavailable_error");
    let (st, body) = plain.await.unwrap();
    assert_eq!(st, 200, "{body}");
    png_of(&body["data"][0]);
    let events = streamed.await.unwrap();
    assert_eq!(events.last().unwrap().0, "image_generation.completed");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not exit:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status:?}:\n{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_request_is_byte_identical_alone_and_in_a_busy_batch() {
    let s = Server::start(&["--step-delay-ms", "5"]);
    let c = client();
    let url = s.url("/v1/images/generations");
    let (st, alone) = post_json(&c, url.clone(), &seeded(42, 2)).await;
    assert_eq!(st, 200);
    let others: Vec<_> = [
        json!({"prompt": "a blue square above a yellow triangle", "n": 3, "seed": 9, "cond_scale": 3}),
        json!({"prompt": "a small green triangle at the top", "n": 2, "seed": 1}),
    ]
    .into_iter()
    .map(|req| {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move { post_json(&c, url, &req).await })
    })
    .collect();
    until_metrics(&c, &s, "the others mid-way", |t| {
        metric(t, "dalle_running_requests") == 2.0 && metric(t, "dalle_active_rows") >= 6.0
    })
    .await;
    let (st, busy) = post_json(&c, url.clone(), &seeded(42, 2)).await;
    assert_eq!(st, 200);
    for i in 0..2 {
        assert_eq!(
            png_of(&busy["data"][i]),
            png_of(&alone["data"][i]),
            "image {i}: the same bytes whatever shares the batch"
        );
    }
    let steps = busy["timings"]["steps_to_start"].as_u64().unwrap();
    assert!(
        steps <= 2,
        "a request arriving mid-run starts within 2 steps, took {steps}"
    );
    for h in others {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_all_get_their_own_images() {
    let s = Server::start(&[]);
    let c = client();
    let url = s.url("/v1/images/generations");
    let mut want = vec![];
    for seed in 0..4u64 {
        let (st, body) = post_json(&c, url.clone(), &seeded(100 + seed, 1)).await;
        assert_eq!(st, 200);
        want.push(png_of(&body["data"][0]));
    }
    let handles: Vec<_> = (0..12u64)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { (i % 4, post_json(&c, url, &seeded(100 + i % 4, 1)).await) })
        })
        .collect();
    for h in handles {
        let (k, (st, body)) = h.await.unwrap();
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            png_of(&body["data"][0]),
            want[k as usize],
            "seed {}",
            100 + k
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_environment_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# serving keys\nsk-test-1\nsk-test-2\n").unwrap();
    let s = Server::start_with(
        &[],
        &[
            ("DALLE_MODEL", bundle().display().to_string()),
            ("DALLE_PORT", "0".into()),
            ("DALLE_API_KEY_FILE", keys.display().to_string()),
            ("DALLE_MODEL_NAME", "shapes-test".into()),
            ("DALLE_LOG_FORMAT", "json".into()),
        ],
        false,
    );
    let c = client();
    let (st, _) = get_json(&c, s.url("/health")).await;
    assert_eq!(st, 200, "probes need no key");
    let (st, body) = get_json(&c, s.url("/v1/models")).await;
    assert_eq!(
        (st, &error_of(&body)["code"]),
        (401, &json!("invalid_api_key"))
    );
    assert_eq!(body["error"]["type"], "authentication_error");
    let r = c
        .get(s.url("/v1/models"))
        .bearer_auth("sk-test-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(s.url("/v1/models"))
        .bearer_auth("sk-test-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["id"], "shapes-test", "DALLE_MODEL_NAME");
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&seeded(1, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(s.url("/v1/images/generations"))
        .bearer_auth("sk-test-1")
        .json(&seeded(1, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = s.log();
    let line = log.lines().find(|l| l.contains("accepted")).expect(&log);
    let v: Value = serde_json::from_str(line).expect("DALLE_LOG_FORMAT=json writes JSON lines");
    assert!(v.get("fields").is_some(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_failure_is_a_500_and_the_server_recovers() {
    let s = Server::start(&["--fail-step", "10"]);
    let c = client();
    let url = s.url("/v1/images/generations");
    let (st, body) = post_json(&c, url.clone(), &seeded(1, 1)).await;
    assert_eq!(st, 500, "{body}");
    assert_eq!(error_of(&body)["type"], "server_error");
    s.wait_ready();
    let (st, body) = post_json(&c, url, &seeded(1, 1)).await;
    assert_eq!(st, 200, "{body}");
    let text = metrics(&c, &s).await;
    assert_eq!(
        metric(&text, "dalle_requests_failed_total{reason=\"internal\"}"),
        1.0
    );
}

/// `stream: true, partial_images: 2` on a min-dalle bundle (16×16 codes → 64×64 px): per image
/// two partial images (decodable PNGs of the model's size, in order), then the completed
/// image, byte-identical to the same request without streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_min_dalle_partial_images_then_completed_ones() {
    let bundle = min_dalle_bundle().to_str().unwrap().to_string();
    let s = Server::start_with(&["--model", &bundle, "--port", "0"], &[], false);
    let c = client();
    let req = json!({"prompt": "An OIL Painting of a CITY at Night", "n": 2, "seed": 5,
                     "top_k": 8, "response_format": "b64_json"});
    let (st, plain) = post_json(&c, s.url("/v1/images/generations"), &req).await;
    assert_eq!(st, 200, "{plain}");
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    streamed["partial_images"] = json!(2);
    let r = c
        .post(s.url("/v1/images/generations"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    let png64 = |item: &Value| {
        let bytes = b64(item["b64_json"].as_str().expect("b64_json"));
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
        bytes
    };
    let mut partials = [vec![], vec![]];
    let mut completed = vec![];
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["size"], "64x64");
        match name.as_str() {
            "image_generation.partial_image" => {
                let i = data["image_index"].as_u64().unwrap() as usize;
                assert!(completed.is_empty(), "partials come before the images");
                partials[i].push(data["partial_image_index"].as_u64().unwrap());
                png64(data);
            }
            "image_generation.completed" => {
                // The request's image tokens: 2 images of 16×16.
                assert_eq!(data["usage"]["output_tokens"], 512);
                completed.push(data.clone());
            }
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert_eq!(partials, [vec![0, 1], vec![0, 1]]);
    assert_eq!(completed.len(), 2);
    for (i, done) in completed.iter().enumerate() {
        assert_eq!(done["image_index"], i);
        assert_eq!(
            png64(done),
            png64(&plain["data"][i]),
            "streamed and plain images are the same bytes"
        );
    }
}
