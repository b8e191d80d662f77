//! Persistent state behind small traits, each with two implementations: DynamoDB (Lambda, and the
//! local server with `TABLE_NAME`) and an embedded in-process store (the local server's default).
//!
//! One table, partition key `pk` (string), TTL on `expires_at` (epoch seconds). DynamoDB deletes
//! expired items late, so every read checks `expires_at` itself.

mod dynamo;
mod memory;

pub use dynamo::{DynamoStore, ensure_table};
pub use memory::MemoryStore;

use async_trait::async_trait;

use crate::secret::Secret;

#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// A logged-in session, stored under the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub openid: String,
    pub unionid: Option<String>,
    /// WeChat's session_key: kept server-side for decrypting user data, never sent to a client.
    pub session_key: Secret,
    pub created_at: u64,
    pub expires_at: u64,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session under `key` (the hash of its token).
    async fn put_session(&self, key: &str, record: &SessionRecord) -> Result<(), StoreError>;
    /// The session under `key`, unless it is missing or its `expires_at` is not after `now`.
    async fn get_session(&self, key: &str, now: u64) -> Result<Option<SessionRecord>, StoreError>;
    /// Deletes the session; deleting a missing one is not an error.
    async fn delete_session(&self, key: &str) -> Result<(), StoreError>;
}

/// What the app knows of a user (`user#<openid>`): bound at logins, `POST /phone` and `PUT /me`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    pub openid: String,
    pub unionid: Option<String>,
    /// Epoch seconds of the first and the latest login (absent only if a login's write failed).
    pub first_seen: Option<u64>,
    pub last_login: Option<u64>,
    pub phone: Option<String>,
    pub phone_bound_at: Option<u64>,
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Records a login of `openid` at `now`; true when this is the user's first login ever.
    async fn record_login(
        &self,
        openid: &str,
        unionid: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Undoes the first login that [`record_login`](Self::record_login) recorded at `at`, when
    /// that login could not open its session: the user's next login is their first again. Does
    /// nothing if the first login on record is not the one at `at`.
    async fn undo_first_login(&self, openid: &str, at: u64) -> Result<(), StoreError>;
    /// The user's record, if one was ever written.
    async fn get_user(&self, openid: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Binds a phone number to the user at `now`.
    async fn bind_phone(&self, openid: &str, phone: &str, now: u64) -> Result<(), StoreError>;
    /// Sets the given profile fields (the others stay); the record as it is now.
    async fn update_profile(
        &self,
        openid: &str,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<UserRecord, StoreError>;
}

/// The shared access token as stored for all instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token: Secret,
    /// Epoch seconds at which WeChat stops accepting it.
    pub expires_at: u64,
    /// Epoch milliseconds at which the fetch that got it started: of two fetches, the one that
    /// started later wins, even within one second.
    pub fetched_at_ms: u64,
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn get_token(&self, key: &str) -> Result<Option<StoredToken>, StoreError>;
    /// Writes the token unless the stored one was fetched later (a slow writer never wins).
    async fn put_token(&self, key: &str, token: &StoredToken) -> Result<(), StoreError>;
    /// Drops the stored token (readers then see none usable) only if it is still `token`;
    /// true if it was dropped.
    async fn delete_token_if(&self, key: &str, token: &Secret) -> Result<bool, StoreError>;
    /// Takes the lease `name` for `holder` until `now_ms + ttl_ms`, if nobody holds an unexpired
    /// one. Conditional write: across all instances at most one caller wins.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Extends the lease to `now_ms + ttl_ms` if `holder` still has it and it has not run out
    /// or been released; true if it did.
    async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Gives the lease back if `holder` still has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Counts one use of the quota `name` if fewer than `limit` were counted; true if counted.
    /// Conditional write: across all instances the count never passes `limit`. The counter is
    /// forgotten after `expires_at` (epoch seconds): name a per-day quota after its day.
    async fn take_quota(&self, name: &str, limit: u32, expires_at: u64)
    -> Result<bool, StoreError>;
}

/// A user's subscribe-message grants for one template (the grant ledger).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub template_id: String,
    /// One-time grants not yet used: each accepted popup adds one, each send uses one.
    pub one_time: u32,
    /// A standing grant (a long-term template, or "always allow" in the settings).
    pub long_term: bool,
}

/// A change to the ledger, from a push or a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantChange {
    /// One more one-time grant (an accepted popup; a send that WeChat did not carry out).
    AddOneTime,
    /// No one-time grants left (a rejected popup; WeChat's 43101).
    ClearOneTime,
    /// The standing grant given (true) or withdrawn (false; withdrawing also clears the
    /// one-time grants).
    LongTerm(bool),
}

/// What a send may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    LongTerm,
    /// One one-time grant, now used up.
    OneTime,
}

/// What [`MessageStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claim is ours now (made, or renewed: it was ours already).
    Taken,
    /// Someone else holds it until then (epoch seconds).
    Held { until: u64 },
}

impl Claim {
    pub fn taken(self) -> bool {
        self == Claim::Taken
    }
}

/// The net effect of a push's changes to one template, applied in one write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetChange {
    /// Clear the one-time grants first.
    pub clear: bool,
    /// Then add this many.
    pub add: u32,
    /// Then set (true) or withdraw (false) the standing grant.
    pub long_term: Option<bool>,
}

impl NetChange {
    /// The changes of `changes`, in order, folded into one.
    pub fn of(changes: impl IntoIterator<Item = GrantChange>) -> Self {
        changes.into_iter().fold(NetChange::default(), |mut n, c| {
            match c {
                GrantChange::AddOneTime => n.add += 1,
                GrantChange::ClearOneTime => (n.clear, n.add) = (true, 0),
                GrantChange::LongTerm(true) => n.long_term = Some(true),
                GrantChange::LongTerm(false) => {
                    (n.clear, n.add, n.long_term) = (true, 0, Some(false));
                }
            }
            n
        })
    }
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Claims `key` for `holder` until `expires_at` (epoch seconds) unless someone else holds an
    /// unexpired claim; a claim `holder` already has is renewed to `expires_at` (a lease made
    /// "done" for longer, or a retry that meets its own write). Conditional write: across all
    /// instances one holder at a time.
    async fn claim(
        &self,
        key: &str,
        holder: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<Claim, StoreError>;
    /// Drops `holder`'s claim on `key` (its work failed: a redelivery may do it).
    async fn release_claim(&self, key: &str, holder: &str) -> Result<(), StoreError>;
    /// Applies the changes to `openid`'s grants, each template's folded into one, all in one
    /// write (a push's items are applied together or not at all).
    async fn change_grants(
        &self,
        openid: &str,
        changes: &[(String, NetChange)],
    ) -> Result<(), StoreError>;
    /// One change to one template.
    async fn change_grant(
        &self,
        openid: &str,
        template_id: &str,
        change: GrantChange,
    ) -> Result<(), StoreError> {
        self.change_grants(
            openid,
            &[(template_id.to_string(), NetChange::of([change]))],
        )
        .await
    }
    /// Uses a grant for one send: the standing one if given, else one one-time grant (never
    /// below zero, across all instances); `None` when there is neither.
    async fn take_grant(
        &self,
        openid: &str,
        template_id: &str,
    ) -> Result<Option<Taken>, StoreError>;
    /// The user's grants, templates with nothing left omitted, by template id.
    async fn grants(&self, openid: &str) -> Result<Vec<Grant>, StoreError>;
    /// Sets `fields` (strings and numbers) of the record `key`, the others kept, and its expiry
    /// (epoch seconds). Two writers of different fields (a media check's owner, its verdict
    /// from a push) never undo each other, whichever comes first.
    async fn merge_record(
        &self,
        key: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    /// The record `key`'s fields, unless it is missing or expired at `now`.
    async fn get_record(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError>;
}

/// Everything the functions keep, in one object (both implementations provide all of it).
pub trait Store: SessionStore + UserStore + TokenStore + MessageStore {}
impl<T: SessionStore + UserStore + TokenStore + MessageStore> Store for T {}

pub(crate) fn session_pk(key: &str) -> String {
    format!("session#{key}")
}
pub(crate) fn user_pk(openid: &str) -> String {
    format!("user#{openid}")
}
pub(crate) fn token_pk(key: &str) -> String {
    format!("token#{key}")
}
pub(crate) fn lease_pk(name: &str) -> String {
    format!("lease#{name}")
}
pub(crate) fn claim_pk(key: &str) -> String {
    format!("claim#{key}")
}
pub(crate) fn record_pk(key: &str) -> String {
    format!("record#{key}")
}
pub(crate) fn grants_pk(openid: &str) -> String {
    format!("grants#{openid}")
}
pub(crate) fn quota_pk(name: &str) -> String {
    format!("quota#{name}")
}
