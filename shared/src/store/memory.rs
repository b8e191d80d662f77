//! The embedded store: process memory, same semantics as the DynamoDB one (expiry checked on
//! read, conditional lease and token writes). For the local server and for fast tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionRecord>,
    users: HashMap<String, UserRecord>,
    tokens: HashMap<String, StoredToken>,
    leases: HashMap<String, (String, u64)>,
    quotas: HashMap<String, (u32, u64)>,
    /// key -> (holder, expires_at)
    claims: HashMap<String, (String, u64)>,
    /// key -> (fields, expires_at)
    records: HashMap<String, (serde_json::Map<String, serde_json::Value>, u64)>,
    /// openid -> template id -> (one-time grants, long-term)
    grants: HashMap<String, std::collections::BTreeMap<String, (u32, bool)>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written: recover the data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn put_session(&self, key: &str, record: &SessionRecord) -> Result<(), StoreError> {
        let mut g = self.lock();
        // Drop what has expired now and then, as DynamoDB's TTL would.
        if g.sessions.len() % 1024 == 1023 {
            let now = record.created_at;
            g.sessions.retain(|_, s| s.expires_at > now);
        }
        g.sessions.insert(key.to_string(), record.clone());
        Ok(())
    }

    async fn get_session(&self, key: &str, now: u64) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .lock()
            .sessions
            .get(key)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn delete_session(&self, key: &str) -> Result<(), StoreError> {
        self.lock().sessions.remove(key);
        Ok(())
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn record_login(
        &self,
        openid: &str,
        unionid: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock();
        let u = user_entry(&mut g, openid);
        let new = u.first_seen.is_none();
        u.first_seen.get_or_insert(now);
        u.last_login = Some(now);
        if let Some(unionid) = unionid {
            u.unionid = Some(unionid.to_string());
        }
        Ok(new)
    }

    async fn undo_first_login(&self, openid: &str, at: u64) -> Result<(), StoreError> {
        if let Some(u) = self.lock().users.get_mut(openid)
            && u.first_seen == Some(at)
        {
            u.first_seen = None;
        }
        Ok(())
    }

    async fn get_user(&self, openid: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.lock().users.get(openid).cloned())
    }

    async fn bind_phone(&self, openid: &str, phone: &str, now: u64) -> Result<(), StoreError> {
        let mut g = self.lock();
        let u = user_entry(&mut g, openid);
        u.phone = Some(phone.to_string());
        u.phone_bound_at = Some(now);
        Ok(())
    }

    async fn update_profile(
        &self,
        openid: &str,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<UserRecord, StoreError> {
        let mut g = self.lock();
        let u = user_entry(&mut g, openid);
        if let Some(n) = nickname {
            u.nickname = Some(n.to_string());
        }
        if let Some(a) = avatar_url {
            u.avatar_url = Some(a.to_string());
        }
        Ok(u.clone())
    }
}

/// The user's record, made empty if there is none yet.
fn user_entry<'a>(g: &'a mut Inner, openid: &str) -> &'a mut UserRecord {
    g.users
        .entry(openid.to_string())
        .or_insert_with(|| UserRecord {
            openid: openid.to_string(),
            ..Default::default()
        })
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn get_token(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        Ok(self.lock().tokens.get(key).cloned())
    }

    async fn put_token(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        let mut g = self.lock();
        match g.tokens.get(key) {
            Some(existing) if existing.fetched_at_ms > token.fetched_at_ms => {}
            _ => {
                g.tokens.insert(key.to_string(), token.clone());
            }
        }
        Ok(())
    }

    async fn delete_token_if(&self, key: &str, token: &Secret) -> Result<bool, StoreError> {
        let mut g = self.lock();
        if g.tokens.get(key).is_some_and(|t| &t.token == token) {
            g.tokens.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock();
        if g.leases.get(name).is_some_and(|(_, until)| *until > now_ms) {
            return Ok(false);
        }
        g.leases
            .insert(name.to_string(), (holder.to_string(), now_ms + ttl_ms));
        Ok(true)
    }

    async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock();
        match g.leases.get_mut(name) {
            Some((h, until)) if h == holder && *until > now_ms => {
                *until = now_ms + ttl_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.leases.get(name).is_some_and(|(h, _)| h == holder) {
            g.leases.remove(name);
        }
        Ok(())
    }

    async fn take_quota(
        &self,
        name: &str,
        limit: u32,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock();
        let now = crate::now_secs();
        g.quotas.retain(|_, (_, exp)| *exp > now);
        let (count, exp) = g.quotas.entry(name.to_string()).or_insert((0, expires_at));
        if *count >= limit {
            return Ok(false);
        }
        *count += 1;
        *exp = expires_at;
        Ok(true)
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        holder: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let mut g = self.lock();
        if g.claims.len() % 1024 == 1023 {
            g.claims.retain(|_, (_, exp)| *exp > now);
            g.records.retain(|_, (_, exp)| *exp > now);
        }
        match g.claims.get(key) {
            Some((h, exp)) if *exp > now && h != holder => Ok(Claim::Held { until: *exp }),
            _ => {
                g.claims
                    .insert(key.to_string(), (holder.to_string(), expires_at));
                Ok(Claim::Taken)
            }
        }
    }

    async fn release_claim(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.claims.get(key).is_some_and(|(h, _)| h == holder) {
            g.claims.remove(key);
        }
        Ok(())
    }

    async fn change_grants(
        &self,
        openid: &str,
        changes: &[(String, NetChange)],
    ) -> Result<(), StoreError> {
        let mut g = self.lock();
        let user = g.grants.entry(openid.to_string()).or_default();
        for (template_id, n) in changes {
            let entry = user.entry(template_id.clone()).or_default();
            if n.clear {
                entry.0 = 0;
            }
            entry.0 += n.add;
            if let Some(lt) = n.long_term {
                entry.1 = lt;
            }
        }
        Ok(())
    }

    async fn take_grant(
        &self,
        openid: &str,
        template_id: &str,
    ) -> Result<Option<Taken>, StoreError> {
        let mut g = self.lock();
        let Some(entry) = g
            .grants
            .get_mut(openid)
            .and_then(|t| t.get_mut(template_id))
        else {
            return Ok(None);
        };
        Ok(if entry.1 {
            Some(Taken::LongTerm)
        } else if entry.0 > 0 {
            entry.0 -= 1;
            Some(Taken::OneTime)
        } else {
            None
        })
    }

    async fn merge_record(
        &self,
        key: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut g = self.lock();
        let entry = g.records.entry(key.to_string()).or_default();
        // Scalars only, as DynamoDB's record keeps them.
        for (k, v) in fields
            .iter()
            .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
        {
            entry.0.insert(k.clone(), v.clone());
        }
        entry.1 = expires_at;
        Ok(())
    }

    async fn get_record(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
        Ok(self
            .lock()
            .records
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(f, _)| f.clone()))
    }

    async fn grants(&self, openid: &str) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .lock()
            .grants
            .get(openid)
            .into_iter()
            .flatten()
            .filter(|(_, (n, lt))| *n > 0 || *lt)
            .map(|(t, (n, lt))| Grant {
                template_id: t.clone(),
                one_time: *n,
                long_term: *lt,
            })
            .collect())
    }
}
