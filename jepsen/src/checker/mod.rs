//! Checkers: each turns a history into a [`CheckResult`].

pub mod elle;
pub mod lease;
pub mod linear;

use serde::Serialize;
use serde_json::Value;

/// A checker's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    /// The checker could not decide (time budget exhausted, or too little data).
    Unknown,
    Invalid,
}

/// One checker's verdict, with details (counts, offending operations) for `results.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub checker: String,
    pub valid: Validity,
    pub details: Value,
}

impl CheckResult {
    pub fn new(checker: &str, valid: Validity, details: Value) -> CheckResult {
        CheckResult { checker: checker.to_string(), valid, details }
    }
}

/// The worst of several verdicts (invalid > unknown > valid).
pub fn overall(results: &[CheckResult]) -> Validity {
    results.iter().map(|r| r.valid).max().unwrap_or(Validity::Unknown)
}
