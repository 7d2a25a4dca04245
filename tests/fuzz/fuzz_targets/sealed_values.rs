//! Opening sealed values and sealed log records: any bytes, under any key and revision,
//! open or are refused with an error.
#![no_main]

use cairn_core::seal::{DataKey, Sealer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(
        DataKey::new([1; 8], [1; 32], [2; 32]),
        vec![DataKey::new([3; 8], [3; 32], [4; 32])],
        vec![b"/s/".to_vec()],
    );
    let (key, rest) = data.split_at(data.len().min(8));
    let revision = rest.get(..8).map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
    let _ = sealer.open_value(key, revision, rest);
    let _ = sealer.open_blob(key, rest);
    // What opens was sealed by us: sealing it again and opening gives it back.
    if let Ok(plain) = sealer.open_value(key, revision, rest) {
        let again = sealer.seal_value(key, revision, &plain);
        assert_eq!(sealer.open_value(key, revision, &again).unwrap(), plain);
    }
});
