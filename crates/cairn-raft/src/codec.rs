//! The one place that encodes openraft's own types (entries, votes, log ids, membership,
//! snapshot meta) for disk and wire: a format version byte, then bincode 2 (serde).
//! Application data inside entries is protobuf (see `types.rs`), so it can evolve on its own.

use serde::de::DeserializeOwned;
use serde::Serialize;

const FORMAT_V1: u8 = 1;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    let mut out = vec![FORMAT_V1];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(std::io::Error::other)?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let (value, used) = bincode::serde::decode_from_slice(rest, config())
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
