//! Typed configuration: one serde value under one key, stored as JSON (so `etcdctl get`
//! shows it), with compare-and-swap on the key's mod revision and a watch of its changes.
//!
//! Each value carries the schema version of the type that wrote it, so that a replica still
//! running older code fails clearly on a value written by newer code (its type may have
//! changed meaning) instead of misreading it. Schema 1 is plain JSON, as 0.1 and 0.2 wrote
//! it; a later schema `n` is stored as `{"cairn_schema": n, "value": …}`. A reader of
//! schema `s` reads values of schemas 1 to `s` (the type's serde attributes, such as
//! `#[serde(default)]`, take care of older shapes) and refuses newer ones with
//! [`Error::NewerSchema`].

use std::marker::PhantomData;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{Client, Error};

/// A value and the revisions that identify this version of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The value, decoded.
    pub value: T,
    /// The key's mod revision: pass it to [`TypedKey::compare_and_swap`].
    pub mod_revision: i64,
    /// How many times the key was written since it was created.
    pub version: i64,
    /// The schema version the value was written with.
    pub schema: u32,
}

/// The field that holds the schema version of an enveloped value (schema 2 and later).
const SCHEMA_FIELD: &str = "cairn_schema";

/// What a compare-and-swap did.
#[derive(Clone, Debug, PartialEq)]
pub enum CasOutcome<T> {
    /// The new value is stored, at this revision.
    Swapped {
        /// The revision of the write.
        revision: i64,
    },
    /// Someone else changed the key first; this is what it holds now (`None`: absent).
    Conflict {
        /// The key's value now (`None`: absent).
        current: Option<Versioned<T>>,
    },
}

/// A serde value of type `T` under `key`, written with schema version `schema`.
pub struct TypedKey<T> {
    client: Client,
    key: Vec<u8>,
    schema: u32,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedKey<T> {
    fn clone(&self) -> Self {
        TypedKey {
            client: self.client.clone(),
            key: self.key.clone(),
            schema: self.schema,
            _value: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> TypedKey<T> {
    /// `T` under `key`, schema version 1 (plain JSON).
    pub fn new(client: &Client, key: impl Into<Vec<u8>>) -> TypedKey<T> {
        TypedKey::with_schema(client, key, 1)
    }

    /// `T` under `key`, written with schema version `schema` (raise it whenever `T` changes
    /// so that older code must not read it; 0 is taken as 1).
    ///
    /// ```no_run
    /// # async fn f(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Feed { url: String, #[serde(default)] mirrors: Vec<String> }
    /// let feed = cairn_client::TypedKey::<Feed>::with_schema(&client, "/config/feed", 2);
    /// feed.put(&Feed { url: "https://example.org".into(), mirrors: vec![] }).await?;
    /// // A replica that still reads schema 1 gets Error::NewerSchema, not a wrong Feed.
    /// # Ok(()) }
    /// ```
    pub fn with_schema(client: &Client, key: impl Into<Vec<u8>>, schema: u32) -> TypedKey<T> {
        TypedKey { client: client.clone(), key: key.into(), schema: schema.max(1), _value: PhantomData }
    }

    /// The value as stored: plain JSON for schema 1, else the versioned envelope.
    fn encode(&self, value: &T) -> Result<Vec<u8>, Error> {
        let encoded = if self.schema == 1 {
            serde_json::to_vec(value)
        } else {
            serde_json::to_vec(&serde_json::json!({ SCHEMA_FIELD: self.schema, "value": value }))
        };
        encoded.map_err(Error::Encode)
    }

    /// The current value (a linearizable read), or `None` when the key is absent.
    pub async fn get(&self) -> Result<Option<Versioned<T>>, Error> {
        let resp = self.client.get(self.key.clone()).await?;
        resp.kvs.into_iter().next().map(|kv| self.decode(&kv)).transpose()
    }

    /// Stores `value` unconditionally; returns the revision of the write.
    pub async fn put(&self, value: &T) -> Result<i64, Error> {
        let value = self.encode(value)?;
        let resp = self.client.put(self.key.clone(), value).await?;
        Ok(crate::header_revision(&resp.header))
    }

    /// Stores `value` only if the key is still at `expected` (its mod revision from
    /// [`Versioned::mod_revision`], or `None` for "absent"), in one transaction.
    pub async fn compare_and_swap(&self, expected: Option<i64>, value: &T) -> Result<CasOutcome<T>, Error> {
        let encoded = self.encode(value)?;
        let compare = match expected {
            Some(rev) => (CompareTarget::Mod, TargetUnion::ModRevision(rev)),
            None => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        };
        let resp = self
            .client
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: compare.0 as i32,
                    key: self.key.clone(),
                    target_union: Some(compare.1),
                    range_end: vec![],
                }],
                success: vec![crate::op(Op::RequestPut(PutRequest {
                    key: self.key.clone(),
                    value: encoded,
                    ..Default::default()
                }))],
                failure: vec![crate::op(Op::RequestRange(RangeRequest {
                    key: self.key.clone(),
                    ..Default::default()
                }))],
            })
            .await?;
        if resp.succeeded {
            return Ok(CasOutcome::Swapped { revision: crate::header_revision(&resp.header) });
        }
        let current = crate::range_kvs(&resp, 0).first().map(|kv| self.decode(kv)).transpose()?;
        Ok(CasOutcome::Conflict { current })
    }

    /// The current value, then every change (`None`: deleted), in order, with none missed.
    /// Ends with an error if the watch is canceled (e.g. by compaction).
    pub fn watch(&self) -> impl Stream<Item = Result<Option<Versioned<T>>, Error>> + Send + 'static {
        let this = self.clone();
        crate::spawn_stream(move |tx| async move { this.follow(&tx).await })
    }

    async fn follow(&self, tx: &mpsc::Sender<Result<Option<Versioned<T>>, Error>>) -> Result<(), Error> {
        let resp = self.client.get(self.key.clone()).await?;
        let current = resp.kvs.first().map(|kv| self.decode(kv)).transpose()?;
        if tx.send(Ok(current)).await.is_err() {
            return Ok(());
        }
        let from = crate::header_revision(&resp.header) + 1;
        let mut watch = self
            .client
            .watch(WatchCreateRequest { key: self.key.clone(), start_revision: from, ..Default::default() })
            .await?;
        loop {
            let r = watch.next_events().await?;
            for e in r.events {
                let change = match (e.r#type == EventType::Delete as i32, e.kv) {
                    (false, Some(kv)) => Some(self.decode(&kv)?),
                    _ => None,
                };
                if tx.send(Ok(change)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    fn decode(&self, kv: &KeyValue) -> Result<Versioned<T>, Error> {
        let key = || String::from_utf8_lossy(&self.key).into_owned();
        let decode_error = |source| Error::Decode { key: key(), source };
        let stored: serde_json::Value = serde_json::from_slice(&kv.value).map_err(decode_error)?;
        let (schema, value) = match stored {
            serde_json::Value::Object(mut fields)
                if fields.contains_key(SCHEMA_FIELD) && fields.len() == 2 =>
            {
                let schema = fields.get(SCHEMA_FIELD).and_then(serde_json::Value::as_u64);
                match (schema, fields.remove("value")) {
                    (Some(schema), Some(value)) => (u32::try_from(schema).unwrap_or(u32::MAX), value),
                    _ => (1, serde_json::Value::Object(fields)),
                }
            }
            plain => (1, plain),
        };
        if schema > self.schema {
            return Err(Error::NewerSchema { key: key(), found: schema, supported: self.schema });
        }
        let value = serde_json::from_value(value).map_err(decode_error)?;
        Ok(Versioned { value, mod_revision: kv.mod_revision, version: kv.version, schema })
    }
}
