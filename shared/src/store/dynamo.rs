//! The DynamoDB store. Item layout (partition key `pk`):
//! - `session#<sha256 of token>`: openid, unionid?, session_key, created_at, expires_at (TTL)
//! - `user#<openid>`: first_seen, last_login, unionid?
//! - `token#<appid>#<mode>`: access_token, expires_at (TTL), fetched_at_ms
//! - `lease#<name>`: holder, until_ms, expires_at (TTL)
//! - `quota#<name>`: used, expires_at (TTL)
//!
//! Every request is marked as a wait on the store (see [`crate::scope`]).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TimeToLiveSpecification,
};

use super::*;

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    async fn get(&self, pk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .in_store()
            .await
            .map_err(err)?;
        Ok(out.item)
    }
}

/// Marks a DynamoDB request as a wait on the store.
trait InStore: std::future::Future + Sized {
    fn in_store(self) -> impl std::future::Future<Output = Self::Output> {
        crate::scope::waiting_on(crate::scope::Waiting::Store, self)
    }
}
impl<F: std::future::Future> InStore for F {}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}
fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Keeps the whole error chain (the SDK's `Display` alone says only "service error").
fn err<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError(DisplayErrorContext(e).to_string())
}

/// The outcome of a conditional write: true if it was made, false if its condition failed (an
/// answer for us, not a fault).
fn conditional<T, E, R>(r: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match r {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// True when the error is a failed `ConditionExpression`.
fn is_condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn put_session(&self, key: &str, r: &SessionRecord) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(session_pk(key)))
            .item("openid", s(&r.openid))
            .item("session_key", s(r.session_key.expose()))
            .item("created_at", n(r.created_at))
            .item("expires_at", n(r.expires_at));
        if let Some(u) = &r.unionid {
            req = req.item("unionid", s(u));
        }
        req.send().in_store().await.map_err(err)?;
        Ok(())
    }

    async fn get_session(&self, key: &str, now: u64) -> Result<Option<SessionRecord>, StoreError> {
        let Some(item) = self.get(session_pk(key)).await? else {
            return Ok(None);
        };
        let record = (|| {
            Some(SessionRecord {
                openid: get_s(&item, "openid")?,
                unionid: get_s(&item, "unionid"),
                session_key: Secret::new(get_s(&item, "session_key")?),
                created_at: get_n(&item, "created_at")?,
                expires_at: get_n(&item, "expires_at")?,
            })
        })();
        // TTL deletion runs late: an item past its expiry is as good as gone.
        Ok(record.filter(|r| r.expires_at > now))
    }

    async fn delete_session(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(session_pk(key)))
            .send()
            .in_store()
            .await
            .map_err(err)?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for DynamoStore {
    async fn record_login(
        &self,
        openid: &str,
        unionid: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut expr =
            "SET last_login = :now, first_seen = if_not_exists(first_seen, :now)".to_string();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(user_pk(openid)))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllOld);
        if let Some(u) = unionid {
            expr.push_str(", unionid = :u");
            req = req.expression_attribute_values(":u", s(u));
        }
        let out = req
            .update_expression(expr)
            .send()
            .in_store()
            .await
            .map_err(err)?;
        Ok(out.attributes.is_none_or(|a| !a.contains_key("first_seen")))
    }
}

#[async_trait]
impl TokenStore for DynamoStore {
    async fn get_token(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        let Some(item) = self.get(token_pk(key)).await? else {
            return Ok(None);
        };
        Ok((|| {
            Some(StoredToken {
                token: Secret::new(get_s(&item, "access_token")?),
                expires_at: get_n(&item, "expires_at")?,
                fetched_at_ms: get_n(&item, "fetched_at_ms")?,
            })
        })())
    }

    async fn put_token(&self, key: &str, t: &StoredToken) -> Result<(), StoreError> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(token_pk(key)))
            .item("access_token", s(t.token.expose()))
            .item("expires_at", n(t.expires_at))
            .item("fetched_at_ms", n(t.fetched_at_ms))
            // An item without fetched_at_ms (written by an older version) is always replaced.
            .condition_expression(
                "attribute_not_exists(pk) OR attribute_not_exists(fetched_at_ms) OR fetched_at_ms <= :f",
            )
            .expression_attribute_values(":f", n(t.fetched_at_ms))
            .send().in_store().await;
        conditional(r).map(|_| ())
    }

    async fn delete_token_if(&self, key: &str, token: &Secret) -> Result<bool, StoreError> {
        // Marked expired rather than deleted: readers treat both alike, the next fetch overwrites
        // it, and concurrent reads never meet a half-deleted item (moto's server has that race).
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(token_pk(key)))
            .update_expression("SET expires_at = :now")
            .condition_expression("access_token = :t")
            .expression_attribute_values(":t", s(token.expose()))
            .expression_attribute_values(":now", n(crate::now_secs()))
            .send()
            .in_store()
            .await;
        conditional(r)
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let until = now_ms + ttl_ms;
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(lease_pk(name)))
            .item("holder", s(holder))
            .item("until_ms", n(until))
            .item("expires_at", n(until / 1000 + 1))
            .condition_expression("attribute_not_exists(pk) OR until_ms <= :now")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .in_store()
            .await;
        conditional(r)
    }

    async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let until = now_ms + ttl_ms;
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(lease_pk(name)))
            .update_expression("SET until_ms = :until, expires_at = :exp")
            // Only a lease still held: a renewal that lands after the release must not revive it.
            .condition_expression("holder = :h AND until_ms > :now")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":exp", n(until / 1000 + 1))
            .send()
            .in_store()
            .await;
        conditional(r)
    }

    async fn take_quota(
        &self,
        name: &str,
        limit: u32,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(quota_pk(name)))
            .update_expression("ADD used :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(used) OR used < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(u64::from(limit)))
            .expression_attribute_values(":exp", n(expires_at))
            .send()
            .in_store()
            .await;
        conditional(r)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        // Released by ending it now (not by deleting the item), for the same reason as above.
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(lease_pk(name)))
            .update_expression("SET until_ms = :zero")
            .condition_expression("holder = :h")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":zero", n(0))
            .send()
            .in_store()
            .await;
        conditional(r).map(|_| ())
    }
}

/// Creates the table if it is missing, with the key schema and TTL setting of template.yaml.
/// For the local server and the tests; in AWS the template creates it.
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), StoreError> {
    if client
        .describe_table()
        .table_name(table)
        .send()
        .in_store()
        .await
        .is_ok()
    {
        return Ok(());
    }
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(err)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .map_err(err)?,
        )
        .send()
        .in_store()
        .await;
    if let Err(e) = created {
        let in_use = e
            .as_service_error()
            .is_some_and(|se| se.is_resource_in_use_exception());
        if !in_use {
            return Err(err(e));
        }
    }
    for _ in 0..60 {
        let d = client
            .describe_table()
            .table_name(table)
            .send()
            .in_store()
            .await
            .map_err(err)?;
        let active = d
            .table
            .and_then(|t| t.table_status)
            .is_some_and(|s| s == aws_sdk_dynamodb::types::TableStatus::Active);
        if active {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(err)?,
        )
        .send()
        .in_store()
        .await
        .map_err(err)?;
    Ok(())
}
