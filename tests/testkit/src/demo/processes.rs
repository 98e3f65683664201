//! The real `countersign` processes of the tour: started with their logs in the demo
//! directory, their listening address read from their first log lines (they bind port 0),
//! killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::DemoOptions;
use crate::github::Delivery;

/// A started process and the address it listens on.
pub struct Started {
    /// Where it serves HTTP (the bot's public listener).
    pub addr: SocketAddr,
    /// The bot's internal listener (probes, metrics, policy API), when it logged one.
    pub internal: Option<SocketAddr>,
    _child: Child,
}

impl Started {
    /// The process id (for its memory in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }
}

/// Starts `countersign <args>` with `KUBECONFIG=kubeconfig`, logging to `<dir>/<name>.log`,
/// and waits (up to the step timeout) for the address it logged.
pub async fn start(
    options: &DemoOptions,
    name: &str,
    kubeconfig: &Path,
    args: Vec<String>,
) -> anyhow::Result<Started> {
    let log_path = options.dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("Cannot create {}", log_path.display()))?;
    let child = Command::new(&options.countersign)
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("Cannot share the log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("Cannot start {} {name}", options.countersign.display()))?;
    let deadline = tokio::time::Instant::now() + options.step_timeout;
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(addr) = logged_addr(&text) {
            return Ok(Started {
                addr,
                internal: logged_field(&text, "internal="),
                _child: child,
            });
        }
        if text.contains("error:") || tokio::time::Instant::now() >= deadline {
            bail!(
                "countersign {name} did not start; the end of {}:\n{}",
                log_path.display(),
                tail(&text, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `addr=` field of a startup log line.
fn logged_addr(log: &str) -> Option<SocketAddr> {
    logged_field(log, "addr=")
}

/// The address in field `field` (`name=`) of a startup log line.
fn logged_field(log: &str, field: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("starting countersign") || l.contains(field))
        .find_map(|l| {
            let clean = strip_ansi(l);
            let start = clean.find(field)? + field.len();
            clean[start..]
                .split_whitespace()
                .next()
                .and_then(|a| a.trim_matches(|c| c == '"' || c == ',').parse().ok())
        })
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits for `GET /readyz` on `addr` to answer 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(200) = request(addr, "GET", "/readyz", &[], b"").await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the process at {addr} was not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts a signed delivery to `addr`'s `/webhook`; returns the status code.
pub async fn post_delivery(addr: SocketAddr, delivery: &Delivery) -> anyhow::Result<u16> {
    let headers = delivery.headers()?;
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
        .collect();
    request(addr, "POST", "/webhook", &pairs, &delivery.body).await
}

/// `GET path` from `addr`: the body of a 200 answer.
pub async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, body) = exchange(addr, "GET", path, &[], b"").await?;
    if status != 200 {
        bail!("GET {path} from {addr} answered {status}");
    }
    Ok(body)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); returns the status.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<u16> {
    Ok(exchange(addr, method, path, headers, body).await?.0)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); returns the status and
/// the body (not de-chunked: only for plain `Content-Length` answers such as `/metrics`).
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            if !name.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("{method} {path} to {addr} timed out"))?
        .with_context(|| format!("Cannot {method} {path} to {addr}"))?;
    let status_line = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {status_line:?}"))?;
    let text = String::from_utf8_lossy(&answer);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_plain_and_coloured_logs() {
        let plain = "2026-12-05T07:00:00Z  INFO countersign_bot::server: starting countersign bot addr=127.0.0.1:40123 internal=127.0.0.1:40124 bot=x";
        assert_eq!(
            logged_addr(plain),
            Some("127.0.0.1:40123".parse().expect("addr"))
        );
        assert_eq!(
            logged_field(plain, "internal="),
            Some("127.0.0.1:40124".parse().expect("addr"))
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:9 starting countersign";
        assert_eq!(
            logged_addr(coloured),
            Some("127.0.0.1:9".parse().expect("addr"))
        );
        assert_eq!(logged_addr("nothing here"), None);
    }
}
