//! The one place that encodes openraft's own types (entries, votes, log ids, membership,
//! snapshot meta) for disk and wire: a format version byte, then bincode 2 (serde).
//! Application data inside entries is protobuf (see `types.rs`), so it can evolve on its own.

use serde::de::DeserializeOwned;
use serde::Serialize;

const FORMAT_V1: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    let mut out = vec![FORMAT_V1];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(std::io::Error::other)?;
    Ok(out)
}

/// Decode `rest` with bincode's byte budget set from its length: bincode allocates a string
/// or byte buffer of the length an input claims before reading it (fuzzing found 4 GiB
/// allocated from 6 bytes, and a process abort), unless a limit is set. Every value bincode
/// reads counts against the budget at most 16 times its encoded size (a one-byte varint
/// counts as the 16 bytes of a u128), so a budget of 16 times the input, rounded up to a
/// power of four, never refuses a real value and bounds what a forged length can allocate.
fn decode_within_budget<T: DeserializeOwned>(rest: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    let budget = rest.len().saturating_mul(16).saturating_add(1024);
    macro_rules! within {
        ($($limit:literal)*) => {
            $(if budget <= $limit {
                return bincode::serde::decode_from_slice(rest, config().with_limit::<$limit>());
            })*
        };
    }
    within!(0x1_0000 0x4_0000 0x10_0000 0x40_0000 0x100_0000 0x400_0000 0x1000_0000 0x4000_0000);
    bincode::serde::decode_from_slice(rest, config().with_limit::<0x1_0000_0000>())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let (value, used) = decode_within_budget(rest)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if used != rest.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "trailing bytes after a stored value",
                ));
            }
            Ok(value)
        }
        Some((v, _)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown stored format version {v}"),
        )),
        None => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "empty stored value")),
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    /// The budget never refuses a real value, however its bytes are spent: many one-byte
    /// varints (each counted as 8 bytes), long strings, large byte buffers.
    #[test]
    fn real_values_fit_the_budget() {
        let small_numbers: Vec<u64> = (0..100_000).map(|i| i % 100).collect();
        assert_eq!(decode::<Vec<u64>>(&encode(&small_numbers).unwrap()).unwrap(), small_numbers);
        let text = "x".repeat(3 << 20);
        assert_eq!(decode::<String>(&encode(&text).unwrap()).unwrap(), text);
        let nested: Vec<(u8, String)> = (0..10_000).map(|i| (i as u8, i.to_string())).collect();
        assert_eq!(decode::<Vec<(u8, String)>>(&encode(&nested).unwrap()).unwrap(), nested);
    }

    /// A forged length is refused before its buffer is allocated (2^62 bytes would abort).
    #[test]
    fn a_forged_length_is_refused() {
        let mut forged = vec![super::FORMAT_V1, 0xFD];
        forged.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode::<String>(&forged).is_err());
        assert!(decode::<Vec<String>>(&forged).is_err());
    }
}
