//! etcd's auth, as etcdctl 3.4, the `etcd-client` crate and the JSON gateway see it: the
//! same flows run against Cairn and against etcd 3.4 (`CAIRN_TEST_TARGET=etcd`), with etcd's
//! texts and exit codes. Users, roles and tokens are replicated: a user added through one
//! member logs in through another, and everything survives a restart of every member.

mod common;

use std::process::Output;

use anyhow::{ensure, Context, Result};
use cairn_tests::etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use cairn_tests::{default_connect_options, grpc_code, Cluster, Code};
use common::*;

const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:alicepw";

/// `etcdctl [--user u] args` against node `i`: (exit code, stdout, stderr).
async fn ctl_as(
    cluster: &Cluster,
    i: usize,
    user: Option<&str>,
    args: &[&str],
) -> Result<(i32, String, String)> {
    let mut all: Vec<&str> = Vec::new();
    let flag;
    if let Some(user) = user {
        flag = format!("--user={user}");
        all.push(&flag);
    }
    all.extend_from_slice(args);
    let out: Output = cluster.etcdctl(i, &all).await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Succeeds and prints exactly `want`.
async fn ok(cluster: &Cluster, i: usize, user: Option<&str>, args: &[&str], want: &str) -> Result<()> {
    let (code, out, err) = ctl_as(cluster, i, user, args).await?;
    ensure!(
        code == 0 && out == want,
        "`etcdctl {args:?}` as {user:?}: exit {code}, stdout {out:?} (want {want:?}), stderr {err}"
    );
    Ok(())
}

/// Fails with exit code `exit` and `Error: <error>` on stderr.
async fn fails(
    cluster: &Cluster,
    i: usize,
    user: Option<&str>,
    args: &[&str],
    exit: i32,
    error: &str,
) -> Result<()> {
    let (code, out, err) = ctl_as(cluster, i, user, args).await?;
    let line = format!("Error: {error}\n");
    ensure!(
        code == exit && err.ends_with(&line),
        "`etcdctl {args:?}` as {user:?}: exit {code} (want {exit}), stdout {out:?}, stderr {err:?} (want it to end with {line:?})"
    );
    Ok(())
}

/// root with the root role, alice with `r` = readwrite on `/a/` (prefix), auth enabled.
async fn set_up(cluster: &Cluster) -> Result<()> {
    ok(cluster, 0, None, &["user", "add", ROOT, "--interactive=false"], "User root created\n").await?;
    ok(cluster, 0, None, &["role", "add", "root"], "Role root created\n").await?;
    ok(cluster, 1, None, &["user", "grant-role", "root", "root"], "Role root is granted to user root\n")
        .await?;
    ok(cluster, 2, None, &["auth", "enable"], "Authentication Enabled\n").await?;
    ok(cluster, 0, Some(ROOT), &["user", "add", ALICE, "--interactive=false"], "User alice created\n")
        .await?;
    ok(cluster, 1, Some(ROOT), &["role", "add", "r"], "Role r created\n").await?;
    ok(
        cluster,
        2,
        Some(ROOT),
        &["role", "grant-permission", "r", "readwrite", "/a/", "--prefix"],
        "Role r updated\n",
    )
    .await?;
    ok(cluster, 0, Some(ROOT), &["user", "grant-role", "alice", "r"], "Role r is granted to user alice\n")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_auth_flow_as_etcd_has_it() {
    let cluster = start_nodes(3).await;
    body(&cluster).await.unwrap();

    async fn body(c: &Cluster) -> Result<()> {
        fails(c, 0, None, &["auth", "enable"], 1, "etcdserver: root user does not exist").await?;
        set_up(c).await?;
        let denied = "etcdserver: permission denied";

        // Without a user, with a wrong password, with a user that does not exist.
        fails(c, 0, None, &["get", "foo"], 1, "etcdserver: user name is empty").await?;
        fails(c, 1, None, &["put", "foo", "bar"], 1, "etcdserver: user name is empty").await?;
        let bad = "etcdserver: authentication failed, invalid user ID or password";
        fails(c, 2, Some("root:wrong"), &["get", "foo"], 2, bad).await?;
        fails(c, 2, Some("mallory:x"), &["get", "foo"], 2, bad).await?;

        // root may do anything; alice what `r` grants, on any member.
        ok(c, 0, Some(ROOT), &["put", "foo", "bar"], "OK\n").await?;
        ok(c, 1, Some(ALICE), &["put", "/a/x", "1"], "OK\n").await?;
        ok(c, 2, Some(ALICE), &["get", "/a/", "--prefix"], "/a/x\n1\n").await?;
        ok(c, 0, Some(ALICE), &["get", "/a/x"], "/a/x\n1\n").await?;
        fails(c, 0, Some(ALICE), &["get", "/a", "--prefix"], 1, denied).await?;
        fails(c, 1, Some(ALICE), &["get", "foo"], 1, denied).await?;
        fails(c, 2, Some(ALICE), &["put", "foo", "2"], 1, denied).await?;
        fails(c, 0, Some(ALICE), &["del", "foo"], 1, denied).await?;
        fails(c, 0, Some(ALICE), &["get", "", "--from-key"], 1, denied).await?;

        // Reading users and roles: root all, alice herself and her role only.
        let role_r = "Role r\nKV Read:\n\t[/a/, /a0) (prefix /a/)\nKV Write:\n\t[/a/, /a0) (prefix /a/)\n";
        ok(c, 1, Some(ROOT), &["role", "get", "r"], role_r).await?;
        ok(c, 1, Some(ALICE), &["role", "get", "r"], role_r).await?;
        ok(c, 2, Some(ALICE), &["user", "get", "alice"], "User: alice\nRoles: r\n").await?;
        ok(c, 0, Some(ROOT), &["user", "list"], "alice\nroot\n").await?;
        ok(c, 0, Some(ROOT), &["role", "list"], "r\nroot\n").await?;
        fails(c, 0, Some(ALICE), &["user", "list"], 1, denied).await?;
        fails(c, 0, Some(ALICE), &["user", "get", "root"], 1, denied).await?;
        fails(c, 0, Some(ALICE), &["role", "get", "root"], 1, denied).await?;
        fails(c, 0, Some(ALICE), &["role", "add", "mine"], 1, denied).await?;

        // Management errors.
        fails(
            c,
            1,
            Some(ROOT),
            &["user", "add", "alice:again", "--interactive=false"],
            1,
            "etcdserver: user name already exists",
        )
        .await?;
        fails(c, 1, Some(ROOT), &["role", "add", "r"], 1, "etcdserver: role name already exists").await?;
        fails(
            c,
            1,
            Some(ROOT),
            &["user", "grant-role", "alice", "nosuch"],
            1,
            "etcdserver: role name not found",
        )
        .await?;
        fails(c, 1, Some(ROOT), &["user", "grant-role", "nosuch", "r"], 1, "etcdserver: user name not found")
            .await?;
        fails(
            c,
            1,
            Some(ROOT),
            &["user", "revoke-role", "alice", "root"],
            1,
            "etcdserver: role is not granted to the user",
        )
        .await?;
        fails(
            c,
            1,
            Some(ROOT),
            &["role", "revoke-permission", "r", "/zz"],
            1,
            "etcdserver: permission is not granted to the role",
        )
        .await?;
        let mgmt = "etcdserver: invalid auth management";
        fails(c, 2, Some(ROOT), &["user", "delete", "root"], 1, mgmt).await?;
        fails(c, 2, Some(ROOT), &["role", "delete", "root"], 1, mgmt).await?;
        fails(c, 2, Some(ROOT), &["user", "revoke-role", "root", "root"], 1, mgmt).await?;

        // A permission granted and revoked takes effect at once, on every member.
        ok(c, 0, Some(ROOT), &["role", "grant-permission", "r", "read", "/b"], "Role r updated\n").await?;
        ok(c, 1, Some(ROOT), &["put", "/b", "B"], "OK\n").await?;
        ok(c, 2, Some(ALICE), &["get", "/b"], "/b\nB\n").await?;
        fails(c, 2, Some(ALICE), &["put", "/b", "x"], 1, denied).await?;
        ok(
            c,
            0,
            Some(ROOT),
            &["role", "revoke-permission", "r", "/b"],
            "Permission of key /b is revoked from role r\n",
        )
        .await?;
        fails(c, 1, Some(ALICE), &["get", "/b"], 1, denied).await?;

        // A new password replaces the old one.
        let (code, out, err) = c
            .etcdctl_with_stdin(
                0,
                &["--user", ROOT, "user", "passwd", "alice", "--interactive=false"],
                Some("newpw\n"),
            )
            .await
            .map(|o| {
                (
                    o.status.code(),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })?;
        ensure!(code == Some(0) && out == "Password updated\n", "passwd: {code:?} {out:?} {err}");
        fails(c, 1, Some(ALICE), &["get", "/a/x"], 2, bad).await?;
        ok(c, 2, Some("alice:newpw"), &["get", "/a/x"], "/a/x\n1\n").await?;

        // Disabled again: anyone may.
        fails(c, 0, Some("alice:newpw"), &["auth", "disable"], 1, denied).await?;
        ok(c, 0, Some(ROOT), &["auth", "disable"], "Authentication Disabled\n").await?;
        ok(c, 1, None, &["get", "foo"], "foo\nbar\n").await?;
        ok(c, 1, None, &["user", "delete", "alice"], "User alice deleted\n").await?;
        ok(c, 1, None, &["user", "list"], "root\n").await
    }
}

async fn as_user(cluster: &Cluster, i: usize, name: &str, password: &str) -> Result<Client> {
    let options = default_connect_options().with_user(name, password);
    Ok(Client::connect([cluster.endpoint(i)], Some(options)).await?)
}

fn refused<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, cairn_tests::etcd_client::Error>,
    code: Code,
    text: &str,
) -> Result<()> {
    match &r {
        Err(e) if grpc_code(e) == Some((code, text.to_string())) => Ok(()),
        _ => anyhow::bail!("{what}: want {code:?} {text:?}, got {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_checks_permissions_as_etcd_does() {
    let cluster = start_nodes(3).await;
    set_up(&cluster).await.unwrap();
    body(&cluster).await.unwrap();

    async fn body(c: &Cluster) -> Result<()> {
        let denied = "etcdserver: permission denied";
        let mut root = as_user(c, 0, "root", "rootpw").await?;
        let mut alice = as_user(c, 1, "alice", "alicepw").await?;
        root.put("/b", "B", None).await?;

        // Txn: every compare and both branches are checked, whichever runs.
        let txn = Txn::new()
            .when([Compare::value("/b", CompareOp::Equal, "B")])
            .and_then([TxnOp::get("/a/x", None)]);
        refused("txn comparing /b", alice.txn(txn).await, Code::PermissionDenied, denied)?;
        let txn = Txn::new()
            .when([Compare::version("/a/x", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("/a/x", "1", None)])
            .or_else([TxnOp::put("/c", "1", None)]);
        refused("txn writing /c in its other branch", alice.txn(txn).await, Code::PermissionDenied, denied)?;
        let txn = Txn::new()
            .when([Compare::version("/a/x", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("/a/x", "1", None)]);
        ensure!(alice.txn(txn).await?.succeeded(), "alice's own txn");

        // put --prev-kv needs read too; a range of the whole keyspace needs it all.
        let with_prev = PutOptions::new().with_prev_key();
        ensure!(alice.put("/a/y", "1", Some(with_prev)).await.is_ok(), "readwrite allows prev_kv");
        refused(
            "get everything",
            alice.get("", Some(GetOptions::new().with_all_keys())).await,
            Code::PermissionDenied,
            denied,
        )?;

        // Watch: a denied create is cancelled on the stream, which goes on serving.
        let mut stream = alice.watch("/b", None).await?;
        let first = stream.message().await?.context("a watch response")?;
        ensure!(first.created() && first.canceled(), "denied watch: {first:?}");
        ensure!(first.cancel_reason().contains(denied), "cancel reason {:?}", first.cancel_reason());
        stream.watch("/a/z", None).await?;
        let second = stream.message().await?.context("a second watch response")?;
        ensure!(second.created() && !second.canceled(), "allowed watch on the same stream: {second:?}");

        // Lease revoke deletes the lease's keys: the caller must be allowed to write them.
        let lease = root.lease_grant(60, None).await?.id();
        root.put("/b/leased", "x", Some(PutOptions::new().with_lease(lease))).await?;
        refused("revoking a lease on /b", alice.lease_revoke(lease).await, Code::PermissionDenied, denied)?;
        root.lease_revoke(lease).await?;

        // Lock: the lock's prefix needs read and write; refusals are Unknown, as etcd's.
        alice.lock("/a/mylock", None).await?;
        refused("locking elsewhere", alice.lock("other", None).await, Code::Unknown, denied)?;

        // Cluster and maintenance: listing and status are open, changes are root's.
        ensure!(!alice.member_list().await?.members().is_empty());
        alice.status().await?;
        refused(
            "member add",
            alice.member_add(["http://127.0.0.9:2380"], None).await,
            Code::PermissionDenied,
            denied,
        )?;
        refused("hashkv", alice.hash_kv(0).await, Code::Unknown, "auth: permission denied")?;
        root.hash_kv(0).await?;

        // With no token at all.
        let mut nobody = Client::connect([c.endpoint(2)], Some(default_connect_options())).await?;
        refused(
            "get",
            nobody.get("/a/x", None).await,
            Code::InvalidArgument,
            "etcdserver: user name is empty",
        )?;
        refused("hashkv", nobody.hash_kv(0).await, Code::Unknown, "auth: user name is empty")?;
        nobody.status().await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_takes_the_token_in_the_authorization_header() {
    let cluster = start_nodes(3).await;
    set_up(&cluster).await.unwrap();
    body(&cluster).unwrap();

    fn body(c: &Cluster) -> Result<()> {
        let url = |i: usize, path: &str| format!("http://{}/v3/{path}", c.client_addr(i));
        let login =
            curl_post(&url(0, "auth/authenticate"), r#"{"name":"alice","password":"alicepw"}"#, None)?;
        ensure!(login.0 == 200, "authenticate: {login:?}");
        let json: serde_json::Value = serde_json::from_str(&login.1)?;
        let token = json["token"].as_str().context("a token")?.to_string();

        // The token stands on every member (it was assigned through the log).
        let put = format!(r#"{{"key":"{}","value":"{}"}}"#, b64("/a/gw"), b64("v"));
        let answer = curl_post(&url(2, "kv/put"), &put, Some(&token))?;
        ensure!(answer.0 == 200, "put with the token on another member: {answer:?}");
        let range = format!(r#"{{"key":"{}"}}"#, b64("/a/gw"));
        let answer = curl_post(&url(1, "kv/range"), &range, Some(&token))?;
        ensure!(answer.0 == 200 && answer.1.contains(&b64("v")), "range: {answer:?}");

        let expect = |answer: (u16, String), status: u16, code: i64, text: &str| -> Result<()> {
            let json: serde_json::Value = serde_json::from_str(&answer.1)?;
            ensure!(
                answer.0 == status
                    && json["code"] == code
                    && json["error"] == text
                    && json["message"] == text,
                "want {status} {code} {text:?}, got {answer:?}"
            );
            Ok(())
        };
        expect(curl_post(&url(1, "kv/range"), &range, None)?, 400, 3, "etcdserver: user name is empty")?;
        expect(
            curl_post(&url(1, "kv/range"), &range, Some("bogus.1"))?,
            401,
            16,
            "etcdserver: invalid auth token",
        )?;
        let other = format!(r#"{{"key":"{}"}}"#, b64("/b"));
        expect(
            curl_post(&url(1, "kv/range"), &other, Some(&token))?,
            403,
            7,
            "etcdserver: permission denied",
        )?;
        let wrong = r#"{"name":"alice","password":"nope"}"#;
        expect(
            curl_post(&url(0, "auth/authenticate"), wrong, None)?,
            400,
            3,
            "etcdserver: authentication failed, invalid user ID or password",
        )?;
        expect(
            curl_post(&url(0, "auth/user/list"), "{}", Some(&token))?,
            403,
            7,
            "etcdserver: permission denied",
        )?;
        Ok(())
    }
}

/// `curl -X POST` with an optional `Authorization` header: (HTTP status, body).
fn curl_post(url: &str, body: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "-d", body]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: {token}")]);
    }
    let out = cmd.arg(url).output().context("curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').context("no status line")?;
    Ok((status.trim().parse()?, body.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn users_and_roles_survive_a_restart_of_every_member() {
    let cluster = start_nodes(3).await;
    set_up(&cluster).await.unwrap();
    ok(&cluster, 0, Some(ALICE), &["put", "/a/kept", "1"], "OK\n").await.unwrap();
    cluster.kill_all().unwrap();
    cluster.restart_stopped().unwrap();
    cluster.wait_ready(CONVERGE).await.unwrap();
    ok(&cluster, 2, Some(ALICE), &["get", "/a/kept"], "/a/kept\n1\n").await.unwrap();
    fails(&cluster, 1, Some(ALICE), &["get", "foo"], 1, "etcdserver: permission denied").await.unwrap();
    fails(&cluster, 0, None, &["get", "/a/kept"], 1, "etcdserver: user name is empty").await.unwrap();
}
