//! The DynamoDB store on moto, with DynamoDB's atomicity restored. moto's threaded server checks a
//! condition and then writes without a lock, so two racing conditional writes can both pass
//! (seen: two lease takes winning in about 1 of 40 races of 20); DynamoDB applies each
//! conditional write atomically. Here the conditional writes of one test's instances take turns,
//! so a test of the keeper's single flight tests the keeper, not moto. The DynamoDB requests and
//! expressions are the production ones.

use async_trait::async_trait;
use wxmp::secret::Secret;
use wxmp::store::{
    DynamoStore, SessionRecord, SessionStore, StoreError, StoredToken, TokenStore, UserStore,
};

pub struct AtomicDynamo {
    inner: DynamoStore,
    turn: tokio::sync::Mutex<()>,
    /// While set, session writes fail as a store that cannot be reached would (the other items
    /// still work): a partial outage.
    sessions_down: std::sync::atomic::AtomicBool,
}

impl AtomicDynamo {
    pub fn new(inner: DynamoStore) -> Self {
        AtomicDynamo {
            inner,
            turn: tokio::sync::Mutex::new(()),
            sessions_down: Default::default(),
        }
    }

    /// Makes session writes fail (`true`) or work again.
    pub fn set_sessions_down(&self, down: bool) {
        self.sessions_down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for AtomicDynamo {
    async fn put_session(&self, key: &str, record: &SessionRecord) -> Result<(), StoreError> {
        if self.sessions_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError("sessions are unreachable (test fault)".into()));
        }
        self.inner.put_session(key, record).await
    }
    async fn get_session(&self, key: &str, now: u64) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get_session(key, now).await
    }
    async fn delete_session(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete_session(key).await
    }
}

#[async_trait]
impl UserStore for AtomicDynamo {
    async fn record_login(
        &self,
        openid: &str,
        unionid: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.inner.record_login(openid, unionid, now).await
    }
    async fn undo_first_login(&self, openid: &str, at: u64) -> Result<(), StoreError> {
        self.inner.undo_first_login(openid, at).await
    }
    async fn get_user(&self, openid: &str) -> Result<Option<wxmp::store::UserRecord>, StoreError> {
        self.inner.get_user(openid).await
    }
    async fn bind_phone(&self, openid: &str, phone: &str, now: u64) -> Result<(), StoreError> {
        self.inner.bind_phone(openid, phone, now).await
    }
    async fn update_profile(
        &self,
        openid: &str,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<wxmp::store::UserRecord, StoreError> {
        self.inner
            .update_profile(openid, nickname, avatar_url)
            .await
    }
}

#[async_trait]
impl TokenStore for AtomicDynamo {
    async fn get_token(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        self.inner.get_token(key).await
    }
    async fn put_token(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.put_token(key, token).await
    }
    async fn delete_token_if(&self, key: &str, token: &Secret) -> Result<bool, StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.delete_token_if(key, token).await
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.try_lease(name, holder, now_ms, ttl_ms).await
    }
    async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.renew_lease(name, holder, now_ms, ttl_ms).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.release_lease(name, holder).await
    }
    async fn take_quota(
        &self,
        name: &str,
        limit: u32,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.take_quota(name, limit, expires_at).await
    }
}

/// Claims and grant use are conditional writes: they take turns too.
#[async_trait]
impl wxmp::store::MessageStore for AtomicDynamo {
    async fn claim(
        &self,
        key: &str,
        holder: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<wxmp::store::Claim, StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.claim(key, holder, expires_at, now).await
    }
    async fn release_claim(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.release_claim(key, holder).await
    }
    async fn change_grants(
        &self,
        openid: &str,
        changes: &[(String, wxmp::store::NetChange)],
    ) -> Result<(), StoreError> {
        self.inner.change_grants(openid, changes).await
    }
    async fn take_grant(
        &self,
        openid: &str,
        template_id: &str,
    ) -> Result<Option<wxmp::store::Taken>, StoreError> {
        let _turn = self.turn.lock().await;
        self.inner.take_grant(openid, template_id).await
    }
    async fn grants(&self, openid: &str) -> Result<Vec<wxmp::store::Grant>, StoreError> {
        self.inner.grants(openid).await
    }
    async fn merge_record(
        &self,
        key: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.inner.merge_record(key, fields, expires_at).await
    }
    async fn get_record(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
        self.inner.get_record(key, now).await
    }
}
