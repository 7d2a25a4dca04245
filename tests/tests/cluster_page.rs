//! The cluster page (issue 12) in a real headless Chromium (Debian's chromium and
//! chromedriver, driven over the W3C WebDriver protocol): three healthy members; one killed
//! shows as unhealthy within the stale timeout; removing it from the page (button, then the
//! confirmation) removes it from the cluster. Screenshots are kept in
//! `$CARGO_TARGET_TMPDIR/cluster-page/`. Cairn only (etcd has no such page).

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_tests::{eventually, free_port, ClusterOptions};
use common::*;
use serde_json::{json, Value};

/// A chromedriver process and one browser session, spoken to with curl.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Result<Browser> {
        let port = free_port(Ipv4Addr::LOCALHOST)?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let base = format!("http://127.0.0.1:{port}");
        let mut last = anyhow!("chromedriver did not answer");
        for _ in 0..100 {
            match call("GET", &format!("{base}/status"), None) {
                Ok(v) if v["value"]["ready"] == true => {
                    last = anyhow!("ready");
                    break;
                }
                Ok(v) => last = anyhow!("not ready: {v}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser { driver, base, session: String::new() };
        ensure!(last.to_string() == "ready", "chromedriver: {last:#}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,700"]
            }
        }}});
        let created = call("POST", &format!("{}/session", browser.base), Some(&caps))?;
        browser.session = created["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session: {created}"))?
            .to_string();
        Ok(browser)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn go(&self, to: &str) -> Result<()> {
        call("POST", &self.url("/url"), Some(&json!({ "url": to })))?;
        Ok(())
    }

    fn script(&self, script: &str) -> Result<Value> {
        let v = call("POST", &self.url("/execute/sync"), Some(&json!({ "script": script, "args": [] })))?;
        Ok(v["value"].clone())
    }

    /// (name, healthy, role) of every row of the page's member table.
    fn rows(&self) -> Result<Vec<(String, bool, String)>> {
        let v = self.script(
            "return Array.from(document.querySelectorAll('tr[data-member]')).map(r => [r.dataset.member, r.dataset.healthy, r.dataset.role])",
        )?;
        let rows = v.as_array().ok_or_else(|| anyhow!("rows: {v}"))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap_or("").to_string(),
                    r[1] == "true",
                    r[2].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    fn click(&self, css: &str) -> Result<()> {
        let found =
            call("POST", &self.url("/element"), Some(&json!({ "using": "css selector", "value": css })))?;
        let element = found["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no element {css}: {found}"))?
            .to_string();
        call("POST", &self.url(&format!("/element/{element}/click")), Some(&json!({})))?;
        Ok(())
    }

    fn alert_text(&self) -> Result<String> {
        let v = call("GET", &self.url("/alert/text"), None)?;
        v["value"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no alert: {v}"))
    }

    fn accept_alert(&self) -> Result<()> {
        call("POST", &self.url("/alert/accept"), Some(&json!({})))?;
        Ok(())
    }

    fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let v = call("GET", &self.url("/screenshot"), None)?;
        let png = decode_base64(v["value"].as_str().ok_or_else(|| anyhow!("no screenshot"))?)?;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cluster-page");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call("DELETE", &self.url(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call; fails on a WebDriver error value.
fn call(method: &str, url: &str, body: Option<&Value>) -> Result<Value> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-X", method, "-H", "Content-Type: application/json", url]);
    if let Some(b) = body {
        cmd.args(["-d", &b.to_string()]);
    }
    let out = cmd.output().context("running curl")?;
    ensure!(out.status.success(), "curl {method} {url}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{method} {url}: {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(err) = v["value"].get("error") {
        bail!("{method} {url}: {err}: {}", v["value"]["message"]);
    }
    Ok(v)
}

fn decode_base64(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: {c}"),
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_page_shows_health_and_removes_a_dead_member() {
    let target = cairn_tests::Target::from_env();
    if !target.is_cairn() {
        eprintln!("the cluster page is Cairn's; nothing to compare with {}", target.name());
        return;
    }
    let cluster = start(ClusterOptions {
        nodes: 3,
        extra_args: vec!["--stale-timeout".into(), "2000".into()],
        ..Default::default()
    })
    .await;
    let page = format!("http://{}/", cluster.client_addr(0));
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap().expect("a headless Chromium");
    browser.go(&page).unwrap();
    let names: Vec<String> = (0..3).map(|i| cluster.node_name(i).to_string()).collect();
    eventually(CONVERGE, "three healthy members on the page, one leader", || async {
        let rows = browser.rows()?;
        ensure!(rows.len() == 3, "{rows:?}");
        ensure!(rows.iter().all(|r| r.1), "{rows:?}");
        ensure!(rows.iter().filter(|r| r.2 == "leader").count() == 1, "{rows:?}");
        for n in &names {
            ensure!(rows.iter().any(|r| &r.0 == n), "{n} missing: {rows:?}");
        }
        Ok(())
    })
    .await
    .unwrap();
    eprintln!("screenshot: {}", browser.screenshot("1-healthy").unwrap().display());

    // Kill a follower (not the member serving the page).
    let leader = cluster.leader().await.unwrap();
    let victim = (1..3).find(|&i| i != leader).unwrap();
    let victim_name = cluster.node_name(victim).to_string();
    cluster.kill(victim).unwrap();
    eventually(Duration::from_secs(20), "the killed member shows as unhealthy", || async {
        let rows = browser.rows()?;
        let row = rows.iter().find(|r| r.0 == victim_name).ok_or_else(|| anyhow!("{rows:?}"))?;
        ensure!(!row.1, "{rows:?}");
        ensure!(rows.iter().filter(|r| r.1).count() == 2, "{rows:?}");
        Ok(())
    })
    .await
    .unwrap();
    eprintln!("screenshot: {}", browser.screenshot("2-one-unhealthy").unwrap().display());

    // Remove it from the page: the button, then the confirmation.
    browser.click(&format!("tr[data-member='{victim_name}'] button[data-action='remove']")).unwrap();
    let question = browser.alert_text().unwrap();
    assert!(question.contains(&victim_name) && question.starts_with("Remove"), "{question}");
    browser.accept_alert().unwrap();
    eventually(CONVERGE, "the member is gone from the cluster and the page", || async {
        let mut c = cluster.client(0).await?;
        let list = c.member_list().await?;
        ensure!(list.members().len() == 2, "{:?}", list.members());
        ensure!(list.members().iter().all(|m| m.name() != victim_name));
        let rows = browser.rows()?;
        ensure!(rows.len() == 2 && rows.iter().all(|r| r.1), "{rows:?}");
        Ok(())
    })
    .await
    .unwrap();
    eprintln!("screenshot: {}", browser.screenshot("3-removed").unwrap().display());

    // The JSON behind the page, and an action without its header is refused.
    let overview: Value = serde_json::from_slice(
        &Command::new("curl").args(["-sS", &format!("{page}v1/cluster")]).output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!(overview["members"].as_array().map(Vec::len), Some(2), "{overview}");
    assert_eq!(overview["election_timeout_ms"], 1000, "{overview}");
    assert_eq!(overview["stale_timeout_ms"], 2000, "{overview}");
    let id = overview["members"][0]["id"].as_str().unwrap().to_string();
    let refused = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("{page}v1/cluster/members/{id}/remove"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "403");
    // A malformed id and an unknown action: clear errors, nothing done.
    for (path, status, code) in [("zz-not-hex/remove", "400", 3), (&*format!("{id}/explode"), "404", 5)] {
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-X", "POST", "-H", "X-Cairn-Action: 1"])
            .arg(format!("{page}v1/cluster/members/{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, got) = text.rsplit_once('\n').unwrap();
        assert_eq!(got, status, "{path}: {text}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], code, "{path}: {v}");
    }
    let mut c = cluster.client(0).await.unwrap();
    assert_eq!(c.member_list().await.unwrap().members().len(), 2);
}
