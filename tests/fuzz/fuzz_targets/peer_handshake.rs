//! The peer handshake from both ends, against whatever the other end sends: the member's
//! `admit` reading a caller's hello and proof, and a caller's `authenticate` reading a
//! member's answers. Both end in an error or (with the right proofs, which random bytes do
//! not hold) success; never a panic or a hang.
#![no_main]

use std::sync::LazyLock;

use cairn_raft::peer_auth::{admit, authenticate};
use cairn_raft::ClusterKey;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

static KEY: LazyLock<ClusterKey> = LazyLock::new(|| {
    let previous = ClusterKey::from_secret(b"the previous key of the fuzzed member").expect("a key");
    ClusterKey::from_secret(b"the current key of the fuzzed member!").expect("a key").with_previous(previous)
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let Some((&side, input)) = data.split_first() else { return };
    RUNTIME.block_on(async {
        // What the other end says is all written up front, then its side is closed: every
        // read past it sees end of file, so the handshake ends.
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        theirs.write_all(input).await.expect("the duplex holds the input");
        theirs.shutdown().await.expect("closing the other side");
        if side % 2 == 0 {
            let _ = admit(&mut ours, &KEY).await;
        } else {
            let _ = authenticate(&mut ours, &KEY).await;
        }
    });
});
