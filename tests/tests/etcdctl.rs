//! Smoke test with etcdctl 3.4 (the stock CLI) against every node: put, get, get --prefix,
//! get -w json, del, and txn fed through stdin.

mod common;

use anyhow::{ensure, Context, Result};
use cairn_tests::Cluster;
use common::*;

async fn ctl_txn(cluster: &Cluster, i: usize, args: &[&str], input: &str) -> Result<String> {
    let out = cluster.etcdctl_with_stdin(i, args, Some(input)).await?;
    stdout(&out, &format!("{} <<< {input:?}", args.join(" ")))
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_smoke() {
    let cluster = start_nodes(3).await;
    etcdctl_smoke_body(&cluster).await.unwrap();
}

async fn etcdctl_smoke_body(cluster: &Cluster) -> Result<()> {
    for i in 0..cluster.len() {
        let p = format!("ctl/n{i}/");
        let k = |s: &str| format!("{p}{s}");

        ensure!(ctl(cluster, i, &["put", &k("foo"), "bar"]).await? == "OK\n", "put");
        ensure!(ctl(cluster, i, &["put", &k("a"), "1"]).await? == "OK\n", "put a");
        ensure!(ctl(cluster, i, &["put", &k("b"), "2"]).await? == "OK\n", "put b");
        // put --prev-kv prints the previous key and value after OK.
        let out = ctl(cluster, i, &["put", &k("b"), "22", "--prev-kv"]).await?;
        ensure!(out == format!("OK\n{}\n2\n", k("b")), "put --prev-kv: {out:?}");

        let out = ctl(cluster, i, &["get", &k("foo")]).await?;
        ensure!(out == format!("{}\nbar\n", k("foo")), "get: {out:?}");
        let out = ctl(cluster, i, &["get", &k("missing")]).await?;
        ensure!(out.is_empty(), "get of a missing key prints nothing: {out:?}");
        let out = ctl(cluster, i, &["get", "--prefix", &p]).await?;
        ensure!(
            out == format!("{}\n1\n{}\n22\n{}\nbar\n", k("a"), k("b"), k("foo")),
            "get --prefix: {out:?}"
        );
        let out = ctl(cluster, i, &["get", "--prefix", "--keys-only", &p]).await?;
        ensure!(out == format!("{}\n\n{}\n\n{}\n\n", k("a"), k("b"), k("foo")), "get --keys-only: {out:?}");
        let out = ctl(cluster, i, &["get", "--print-value-only", &k("foo")]).await?;
        ensure!(out == "bar\n", "get --print-value-only: {out:?}");

        // -w json: header.revision and the base64 key/value.
        let rev = current_rev(&mut cluster.client(i).await?).await?;
        let out = ctl(cluster, i, &["get", &k("foo"), "-w", "json"]).await?;
        let v: serde_json::Value = serde_json::from_str(&out).context("get -w json output")?;
        ensure!(v["header"]["revision"].as_i64() == Some(rev), "json revision: {out}");
        ensure!(v["count"].as_i64() == Some(1), "json count: {out}");
        ensure!(v["kvs"][0]["key"].as_str() == Some(b64(&k("foo")).as_str()), "json key: {out}");
        ensure!(v["kvs"][0]["value"].as_str() == Some(b64("bar").as_str()), "json value: {out}");
        ensure!(v["kvs"][0]["version"].as_i64() == Some(1), "json version: {out}");
        let create = v["kvs"][0]["create_revision"].as_i64().context("create_revision")?;
        ensure!(create > 0 && create <= rev, "json create_revision: {out}");

        // del prints the number of deleted keys.
        ensure!(ctl(cluster, i, &["del", &k("foo")]).await? == "1\n", "del");
        ensure!(ctl(cluster, i, &["del", &k("foo")]).await? == "0\n", "del of a missing key");
        ensure!(ctl(cluster, i, &["put", &k("foo"), "bar"]).await? == "OK\n", "put again");

        // txn through stdin: compares, blank line, success ops, blank line, failure ops, blank line.
        let input = format!(
            "value(\"{foo}\") = \"bar\"\nmod(\"{foo}\") > \"0\"\n\nput {foo} baz\nget {foo}\ndel {missing}\n\nput {foo} failed\n\n",
            foo = k("foo"),
            missing = k("missing")
        );
        let out = ctl_txn(cluster, i, &["txn"], &input).await?;
        ensure!(out == format!("SUCCESS\n\nOK\n\n{}\nbaz\n\n0\n", k("foo")), "txn success: {out:?}");
        let input = format!(
            "version(\"{foo}\") = \"1\"\n\nput {foo} never\n\nput {foo} else\nget {foo}\n\n",
            foo = k("foo")
        );
        let out = ctl_txn(cluster, i, &["txn"], &input).await?;
        ensure!(out == format!("FAILURE\n\nOK\n\n{}\nelse\n", k("foo")), "txn failure: {out:?}");
        // Interactive mode reads the same input, printing its prompts.
        let input = format!("create(\"{foo}\") > \"0\"\n\nput {foo} interactive\n\n\n", foo = k("foo"));
        let out = ctl_txn(cluster, i, &["txn", "-i"], &input).await?;
        ensure!(
            out == "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n",
            "txn -i: {out:?}"
        );
        let out = ctl(cluster, i, &["get", "--print-value-only", &k("foo")]).await?;
        ensure!(out == "interactive\n", "value after txn -i: {out:?}");

        // The same data through the gRPC client: every node agrees.
        for j in 0..cluster.len() {
            let out = ctl(cluster, j, &["get", "--prefix", &p]).await?;
            ensure!(
                out == format!("{}\n1\n{}\n22\n{}\ninteractive\n", k("a"), k("b"), k("foo")),
                "node {j} sees what was written through node {i}: {out:?}"
            );
        }
        ensure!(ctl(cluster, i, &["del", "--prefix", &p]).await? == "3\n", "del --prefix");
    }
    Ok(())
}
