//! The order store: an embedded database (redb, one file, transactions that survive
//! kill -9) holding every order, the queue, what is running, the idempotency keys and the
//! callbacks still to deliver.
//!
//! redb lets one process open the file at a time, which is what makes recovery simple:
//! when the store opens, nothing else is running orders, so an order found `running` was
//! cut off by a crash and goes back to the queue (the engine resumes what it left).

use super::{Order, OrderState};
use chrono::Utc;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// id -> the order's record as JSON.
const ORDERS: TableDefinition<u64, &[u8]> = TableDefinition::new("orders");
/// The queued orders' ids, in arrival order.
const QUEUE: TableDefinition<u64, ()> = TableDefinition::new("queue");
/// The running orders' ids.
const RUNNING: TableDefinition<u64, ()> = TableDefinition::new("running");
/// Finished orders whose callback is still to be delivered.
const CALLBACKS: TableDefinition<u64, ()> = TableDefinition::new("callbacks");
/// Idempotency key -> the order it made, and the digest of that order's body.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// `next_id`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// At most this many orders wait in the queue; more are refused until it drains.
pub const MAX_QUEUED: usize = 1000;

/// Everything known of one order: what the API answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: u64,
    pub state: OrderState,
    pub order: Order,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Times a worker took it up (more than one after a busy session or a restart).
    pub attempts: u32,
    /// Why a queued order waits, or that it was resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub errors: Vec<String>,
    /// What a finished order made (files, outcome, run summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackState>,
    /// A queued order is not taken before this (unix ms): a busy session is tried again
    /// a little later, not in a tight loop. Stored (it must survive a restart), shown only
    /// while it is set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_before_ms: i64,
}

/// Where the delivery of an order's callback is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackState {
    pub delivered: bool,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix ms of the next attempt (stored: the schedule survives a restart).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_at_ms: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: u64,
    digest: String,
}

/// What [`Store::submit`] did.
#[derive(Debug)]
pub enum Submitted {
    /// A new order, queued.
    New(OrderRecord),
    /// The idempotency key was seen with the same order: the order it made then.
    Replayed(OrderRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the idempotency key was used for a different order (order {0}); use a new key for a new order"
    )]
    KeyReused(u64),
    #[error("{MAX_QUEUED} orders are queued already; try again when some have run")]
    Full,
    #[error("the order store is in use by another serve ({0}); one service per output folder")]
    InUse(PathBuf),
    #[error("order store {path}: {message}", path = .0.display(), message = .1)]
    Failed(PathBuf, String),
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (or creates) the store at `path`, and puts orders a crash left running back
    /// in the queue.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Failed(path.to_path_buf(), e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(path.to_path_buf()),
            e => StoreError::Failed(path.to_path_buf(), e.to_string()),
        })?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.recover()?;
        Ok(store)
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed(self.path.clone(), e.to_string())
    }

    /// Running orders of a process that is gone go back to the queue, first in line.
    fn recover(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
            let mut queue = txn.open_table(QUEUE).map_err(|e| self.fail(e))?;
            let mut running = txn.open_table(RUNNING).map_err(|e| self.fail(e))?;
            txn.open_table(CALLBACKS).map_err(|e| self.fail(e))?;
            txn.open_table(KEYS).map_err(|e| self.fail(e))?;
            txn.open_table(META).map_err(|e| self.fail(e))?;
            let cut_off: Vec<u64> = running
                .iter()
                .map_err(|e| self.fail(e))?
                .filter_map(|entry| entry.ok().map(|(id, _)| id.value()))
                .collect();
            for id in cut_off {
                running.remove(id).map_err(|e| self.fail(e))?;
                let Some(mut record) = read(&orders, id).map_err(|e| self.fail(e))? else {
                    continue;
                };
                record.state = OrderState::Queued;
                record.note = Some("resumed: the service stopped while it was running".into());
                record.not_before_ms = 0;
                write(&mut orders, &record).map_err(|e| self.fail(e))?;
                queue.insert(id, ()).map_err(|e| self.fail(e))?;
                tracing::info!(order = id, "order resumed after a restart");
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Queues `order`. With an idempotency key (and the digest of the request's body), a
    /// key seen before returns the order it made, if the body is the same.
    pub fn submit(&self, order: Order, key: Option<(&str, &str)>) -> Result<Submitted, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let record = {
            let mut orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
            let mut keys = txn.open_table(KEYS).map_err(|e| self.fail(e))?;
            if let Some((key, digest)) = key
                && let Some(entry) = keys.get(key).map_err(|e| self.fail(e))?
            {
                let entry: KeyEntry =
                    serde_json::from_slice(entry.value()).map_err(|e| self.fail(e))?;
                if entry.digest != digest {
                    return Err(StoreError::KeyReused(entry.id));
                }
                if let Some(record) = read(&orders, entry.id).map_err(|e| self.fail(e))? {
                    return Ok(Submitted::Replayed(record));
                }
            }
            let mut queue = txn.open_table(QUEUE).map_err(|e| self.fail(e))?;
            if queue.len().map_err(|e| self.fail(e))? as usize >= MAX_QUEUED {
                return Err(StoreError::Full);
            }
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let id = meta
                .get("next_id")
                .map_err(|e| self.fail(e))?
                .map_or(1, |v| v.value());
            meta.insert("next_id", id + 1).map_err(|e| self.fail(e))?;
            let record = OrderRecord {
                id,
                state: OrderState::Queued,
                order,
                created_at: Utc::now().to_rfc3339(),
                started_at: None,
                finished_at: None,
                attempts: 0,
                note: None,
                errors: Vec::new(),
                result: None,
                callback: None,
                not_before_ms: 0,
            };
            write(&mut orders, &record).map_err(|e| self.fail(e))?;
            queue.insert(id, ()).map_err(|e| self.fail(e))?;
            if let Some((key, digest)) = key {
                let entry = serde_json::to_vec(&KeyEntry {
                    id,
                    digest: digest.to_string(),
                })
                .map_err(|e| self.fail(e))?;
                keys.insert(key, entry.as_slice())
                    .map_err(|e| self.fail(e))?;
            }
            record
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(Submitted::New(record))
    }

    pub fn get(&self, id: u64) -> Result<Option<OrderRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
        read(&orders, id).map_err(|e| self.fail(e))
    }

    /// The latest `limit` orders, newest first.
    pub fn latest(&self, limit: usize) -> Result<Vec<OrderRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
        let mut found = Vec::new();
        for entry in orders.iter().map_err(|e| self.fail(e))?.rev().take(limit) {
            let (_, bytes) = entry.map_err(|e| self.fail(e))?;
            found.push(serde_json::from_slice(bytes.value()).map_err(|e| self.fail(e))?);
        }
        Ok(found)
    }

    /// Takes the first queued order that is due and whose session `busy` does not name,
    /// and marks it running.
    pub fn claim(&self, busy: &dyn Fn(&str) -> bool) -> Result<Option<OrderRecord>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let claimed = {
            let mut orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
            let mut queue = txn.open_table(QUEUE).map_err(|e| self.fail(e))?;
            let mut running = txn.open_table(RUNNING).map_err(|e| self.fail(e))?;
            let ids: Vec<u64> = queue
                .iter()
                .map_err(|e| self.fail(e))?
                .filter_map(|entry| entry.ok().map(|(id, _)| id.value()))
                .collect();
            let now = now_ms();
            let mut claimed = None;
            for id in ids {
                let Some(mut record) = read(&orders, id).map_err(|e| self.fail(e))? else {
                    queue.remove(id).map_err(|e| self.fail(e))?;
                    continue;
                };
                if record.not_before_ms > now || busy(record.order.session()) {
                    continue;
                }
                queue.remove(id).map_err(|e| self.fail(e))?;
                running.insert(id, ()).map_err(|e| self.fail(e))?;
                record.state = OrderState::Running;
                record.not_before_ms = 0;
                record.attempts += 1;
                record.started_at = Some(Utc::now().to_rfc3339());
                write(&mut orders, &record).map_err(|e| self.fail(e))?;
                claimed = Some(record);
                break;
            }
            claimed
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(claimed)
    }

    /// A running order goes back to the queue, to be taken again after `delay`.
    pub fn requeue(
        &self,
        id: u64,
        note: String,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.update(id, |record, tables| {
            record.state = OrderState::Queued;
            record.note = Some(note);
            record.not_before_ms = now_ms() + delay.as_millis() as i64;
            tables.queue = Some(true);
        })
    }

    /// A running order ends: its outcome is recorded, and its callback (if any) becomes
    /// due.
    pub fn finish(
        &self,
        id: u64,
        state: OrderState,
        errors: Vec<String>,
        result: Option<Value>,
    ) -> Result<(), StoreError> {
        self.update(id, |record, tables| {
            record.state = state;
            record.errors = errors;
            record.result = result;
            record.note = None;
            record.finished_at = Some(Utc::now().to_rfc3339());
            if record.order.callback.is_some() {
                record.callback = Some(CallbackState {
                    delivered: false,
                    attempts: 0,
                    last_error: None,
                    next_at_ms: 0,
                });
                tables.callback = Some(true);
            }
        })
    }

    /// The finished orders whose callback is due now.
    pub fn due_callbacks(&self) -> Result<Vec<OrderRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
        let pending = txn.open_table(CALLBACKS).map_err(|e| self.fail(e))?;
        let now = now_ms();
        let mut due = Vec::new();
        for entry in pending.iter().map_err(|e| self.fail(e))? {
            let (id, _) = entry.map_err(|e| self.fail(e))?;
            if let Some(record) = read(&orders, id.value()).map_err(|e| self.fail(e))?
                && record
                    .callback
                    .as_ref()
                    .is_some_and(|c| c.next_at_ms <= now)
            {
                due.push(record);
            }
        }
        Ok(due)
    }

    /// Records one attempt at an order's callback: delivered, or failed with `error` and
    /// tried again after `retry` (or never again, without one).
    pub fn callback_attempt(
        &self,
        id: u64,
        error: Option<String>,
        retry: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        self.update(id, |record, tables| {
            let Some(callback) = record.callback.as_mut() else {
                tables.callback = Some(false);
                return;
            };
            callback.attempts += 1;
            callback.delivered = error.is_none();
            callback.last_error = error.clone();
            match (&error, retry) {
                (Some(_), Some(retry)) => callback.next_at_ms = now_ms() + retry.as_millis() as i64,
                _ => tables.callback = Some(false),
            }
        })
    }

    /// Changes one order's record, and its places in the queue, the running set and the
    /// callbacks, in one transaction.
    fn update(
        &self,
        id: u64,
        change: impl FnOnce(&mut OrderRecord, &mut Places),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut orders = txn.open_table(ORDERS).map_err(|e| self.fail(e))?;
            let Some(mut record) = read(&orders, id).map_err(|e| self.fail(e))? else {
                return Err(self.fail(format!("no order {id}")));
            };
            let was_running = record.state == OrderState::Running;
            let mut places = Places::default();
            change(&mut record, &mut places);
            write(&mut orders, &record).map_err(|e| self.fail(e))?;
            if was_running && record.state != OrderState::Running {
                let mut running = txn.open_table(RUNNING).map_err(|e| self.fail(e))?;
                running.remove(id).map_err(|e| self.fail(e))?;
            }
            if places.queue == Some(true) {
                let mut queue = txn.open_table(QUEUE).map_err(|e| self.fail(e))?;
                queue.insert(id, ()).map_err(|e| self.fail(e))?;
            }
            if let Some(pending) = places.callback {
                let mut callbacks = txn.open_table(CALLBACKS).map_err(|e| self.fail(e))?;
                if pending {
                    callbacks.insert(id, ()).map_err(|e| self.fail(e))?;
                } else {
                    callbacks.remove(id).map_err(|e| self.fail(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }
}

/// Where an update puts the order besides its record.
#[derive(Default)]
struct Places {
    queue: Option<bool>,
    callback: Option<bool>,
}

fn read(
    orders: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<OrderRecord>, String> {
    match orders.get(id).map_err(|e| e.to_string())? {
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| format!("order {id}: {e}")),
        None => Ok(None),
    }
}

fn write(orders: &mut redb::Table<u64, &'static [u8]>, record: &OrderRecord) -> Result<(), String> {
    let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    orders
        .insert(record.id, bytes.as_slice())
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::Work;

    fn order(session: &str) -> Order {
        Order {
            work: Work::Task {
                task: "ReadMetadata".into(),
                session: session.into(),
                parameters: Default::default(),
            },
            callback: None,
        }
    }

    #[test]
    fn a_running_order_survives_a_crash_and_a_key_replays_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.redb");
        {
            let store = Store::open(&path).unwrap();
            let Submitted::New(first) = store.submit(order("a"), Some(("k1", "d1"))).unwrap()
            else {
                panic!("a new order")
            };
            let Submitted::Replayed(again) = store.submit(order("a"), Some(("k1", "d1"))).unwrap()
            else {
                panic!("replayed")
            };
            assert_eq!(again.id, first.id);
            assert!(matches!(
                store.submit(order("b"), Some(("k1", "d2"))),
                Err(StoreError::KeyReused(id)) if id == first.id
            ));
            store.submit(order("b"), None).unwrap();
            let claimed = store.claim(&|_| false).unwrap().unwrap();
            assert_eq!(claimed.id, first.id);
            assert_eq!(claimed.state, OrderState::Running);
            // The other process cannot open it meanwhile.
            assert!(matches!(Store::open(&path), Err(StoreError::InUse(_))));
        }
        let store = Store::open(&path).unwrap();
        let resumed = store.get(1).unwrap().unwrap();
        assert_eq!(resumed.state, OrderState::Queued);
        assert!(resumed.note.unwrap().contains("resumed"));
        // First in line again, and the busy filter skips sessions.
        assert_eq!(store.claim(&|s| s == "a").unwrap().unwrap().id, 2);
        let again = store.claim(&|_| false).unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (1, 2));
        assert!(store.claim(&|_| false).unwrap().is_none());
        store
            .finish(1, OrderState::Succeeded, vec![], None)
            .unwrap();
        assert_eq!(store.get(1).unwrap().unwrap().state, OrderState::Succeeded);
        assert_eq!(store.latest(10).unwrap().len(), 2);
    }
}
