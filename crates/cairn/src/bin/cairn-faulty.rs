//! `cairn-faulty`: the `cairn` server with the test-only deliberate bugs of cairn-raft's
//! `fault-injection` feature armed (chosen by `CAIRN_FAULT=stale-read|ack-before-commit`).
//! It exists only so the chaos harness (`jepsen/`) can prove that its checkers fail on a buggy
//! server; never deploy it.

#[path = "../main.rs"]
mod server;

fn main() -> std::process::ExitCode {
    cairn_raft::fault::arm();
    server::main()
}
