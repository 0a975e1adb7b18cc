//! A small bank-account aggregate shared by the tests.
#![allow(dead_code)]

use std::path::Path;

use busline_es::{Aggregate, AggregateStore, DomainEvent, Projection, Recorded, StoreOptions};
use busline_log::{Log, Options, Persist};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64, by: String },
    Withdrawn { amount: u64 },
    Frozen,
    Unfrozen,
}

impl DomainEvent for AccountEvent {
    const TYPES: &'static [&'static str] =
        &["Opened", "Deposited", "Withdrawn", "Frozen", "Unfrozen"];
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Open(String),
    Deposit(u64, String),
    Withdraw(u64),
    Freeze,
    Unfreeze,
    /// Deposit split into several events at once.
    Split(Vec<u64>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AccountError {
    #[error("account is not open")]
    NotOpen,
    #[error("account already open")]
    AlreadyOpen,
    #[error("insufficient funds: balance {balance}, wanted {wanted}")]
    Insufficient { balance: u64, wanted: u64 },
    #[error("account is frozen")]
    Frozen,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub balance: u64,
    pub frozen: bool,
    pub log: Vec<String>,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, c: Command) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountEvent as E;
        if self.owner.is_none() && !matches!(c, Command::Open(_)) {
            return Err(AccountError::NotOpen);
        }
        Ok(match c {
            Command::Open(owner) => {
                if self.owner.is_some() {
                    return Err(AccountError::AlreadyOpen);
                }
                vec![E::Opened { owner }]
            }
            Command::Deposit(amount, by) => vec![E::Deposited { amount, by }],
            Command::Withdraw(amount) => {
                if self.frozen {
                    return Err(AccountError::Frozen);
                }
                if amount > self.balance {
                    return Err(AccountError::Insufficient {
                        balance: self.balance,
                        wanted: amount,
                    });
                }
                vec![E::Withdrawn { amount }]
            }
            Command::Freeze if !self.frozen => vec![E::Frozen],
            Command::Unfreeze if self.frozen => vec![E::Unfrozen],
            Command::Freeze | Command::Unfreeze => vec![],
            Command::Split(parts) => parts
                .into_iter()
                .map(|amount| E::Deposited {
                    amount,
                    by: "split".into(),
                })
                .collect(),
        })
    }

    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount, by } => {
                self.balance += amount;
                self.log.push(format!("+{amount} {by}"));
            }
            AccountEvent::Withdrawn { amount } => {
                self.balance -= amount;
                self.log.push(format!("-{amount}"));
            }
            AccountEvent::Frozen => self.frozen = true,
            AccountEvent::Unfrozen => self.frozen = false,
        }
    }
}

/// A read model: balance per account, and every offset applied (to catch
/// double application and gaps).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balances {
    pub balances: std::collections::BTreeMap<String, u64>,
    pub applied: Vec<u64>,
}

impl Projection for Balances {
    const AGGREGATE_TYPE: &'static str = "account";
    type Event = AccountEvent;
    fn apply(&mut self, r: &Recorded<AccountEvent>) {
        self.applied.push(r.offset);
        let b = self.balances.entry(r.aggregate_id.clone()).or_default();
        match r.event {
            AccountEvent::Deposited { amount, .. } => *b += amount,
            AccountEvent::Withdrawn { amount } => *b -= amount,
            _ => {}
        }
    }
}

pub fn buffered() -> Options {
    Options {
        persist: Persist::Buffered,
        ..Options::default()
    }
}

pub fn open_store(dir: &Path, options: StoreOptions) -> AggregateStore<Account> {
    let log = Log::open(dir.join("log"), buffered()).unwrap();
    AggregateStore::open(log, options.clone_with_dir(dir)).unwrap()
}

pub trait WithDir {
    fn clone_with_dir(self, dir: &Path) -> StoreOptions;
}

impl WithDir for StoreOptions {
    fn clone_with_dir(mut self, dir: &Path) -> StoreOptions {
        self.snapshot_dir = Some(dir.join("snapshots"));
        self
    }
}
