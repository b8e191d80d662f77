//! The DynamoDB store. Item layout (partition key `pk`):
//! - `session#<sha256 of token>`: openid, unionid?, session_key, created_at, expires_at (TTL)
//! - `user#<openid>`: first_seen, last_login, unionid?, phone?, phone_bound_at?, nickname?,
//!   avatar_url?
//! - `token#<appid>#<mode>`: access_token, expires_at (TTL), fetched_at_ms
//! - `lease#<name>`: holder, until_ms, expires_at (TTL)
//! - `quota#<name>`: used, expires_at (TTL)
//! - `claim#<key>`: holder, expires_at (TTL): a push or an event already handled
//! - `record#<key>`: `f:<field>` (strings and numbers), expires_at (TTL): media checks, links
//! - `grants#<openid>`: `o:<template id>` (one-time grants left), `l:<template id>` (standing)
//!
//! Requests are DynamoDB's JSON documents (`crate::aws::DynamoDb`). Every request is marked as a
//! wait on the store (see [`crate::scope`]).

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::*;
use crate::aws::{AwsError, DynamoDb};

#[derive(Clone)]
pub struct DynamoStore {
    client: DynamoDb,
    table: String,
}

impl DynamoStore {
    pub fn new(client: DynamoDb, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    async fn call(&self, operation: &str, mut request: Value) -> Result<Value, AwsError> {
        request["TableName"] = json!(self.table);
        crate::scope::waiting_on(
            crate::scope::Waiting::Store,
            self.client.call(operation, &request),
        )
        .await
    }

    /// A strongly consistent read of the item `pk`.
    async fn get(&self, pk: String) -> Result<Option<Map<String, Value>>, StoreError> {
        let out = self
            .call(
                "GetItem",
                json!({"Key": {"pk": s(pk)}, "ConsistentRead": true}),
            )
            .await
            .map_err(err)?;
        Ok(match out {
            Value::Object(mut o) => match o.remove("Item") {
                Some(Value::Object(item)) => Some(item),
                _ => None,
            },
            _ => None,
        })
    }

    /// A conditional write: true if it was made, false if its condition failed (an answer for
    /// us, not a fault).
    async fn conditional(&self, operation: &str, request: Value) -> Result<bool, StoreError> {
        self.conditional_or_ours(operation, request, |_| false)
            .await
    }

    /// A conditional write that also counts as made when the condition was refused because the
    /// item already is what the write makes it (`ours` on the item as it was): a retry after an
    /// attempt that was applied but whose answer was lost meets its own write.
    async fn conditional_or_ours(
        &self,
        operation: &str,
        mut request: Value,
        ours: impl Fn(&Map<String, Value>) -> bool,
    ) -> Result<bool, StoreError> {
        request["ReturnValuesOnConditionCheckFailure"] = json!("ALL_OLD");
        match self.call(operation, request).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == "ConditionalCheckFailedException" => {
                Ok(e.old_item.as_ref().is_some_and(ours))
            }
            Err(e) => Err(err(e)),
        }
    }
}

fn s(v: impl Into<String>) -> Value {
    json!({ "S": v.into() })
}
fn n(v: u64) -> Value {
    json!({ "N": v.to_string() })
}
fn get_s(item: &Map<String, Value>, k: &str) -> Option<String> {
    item.get(k)?.get("S")?.as_str().map(str::to_string)
}
fn get_n(item: &Map<String, Value>, k: &str) -> Option<u64> {
    item.get(k)?.get("N")?.as_str()?.parse().ok()
}

fn err(e: AwsError) -> StoreError {
    StoreError(e.to_string())
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn put_session(&self, key: &str, r: &SessionRecord) -> Result<(), StoreError> {
        let mut item = json!({
            "pk": s(session_pk(key)),
            "openid": s(&r.openid),
            "session_key": s(r.session_key.expose()),
            "created_at": n(r.created_at),
            "expires_at": n(r.expires_at),
        });
        if let Some(u) = &r.unionid {
            item["unionid"] = s(u);
        }
        self.call("PutItem", json!({ "Item": item }))
            .await
            .map_err(err)?;
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
        self.call("DeleteItem", json!({ "Key": { "pk": s(session_pk(key)) } }))
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
        let mut values = json!({ ":now": n(now) });
        if let Some(u) = unionid {
            expr.push_str(", unionid = :u");
            values[":u"] = s(u);
        }
        let out = self
            .call(
                "UpdateItem",
                json!({
                    "Key": { "pk": s(user_pk(openid)) },
                    "UpdateExpression": expr,
                    "ExpressionAttributeValues": values,
                    "ReturnValues": "ALL_OLD",
                }),
            )
            .await
            .map_err(err)?;
        // (A retry whose first attempt was applied reports a new user as known: a second login
        // in the same second must not count as new, so the two cannot be told apart.)
        Ok(out.pointer("/Attributes/first_seen").is_none())
    }

    async fn undo_first_login(&self, openid: &str, at: u64) -> Result<(), StoreError> {
        // Refused (and nothing to undo) when the first login on record is another one.
        self.conditional(
            "UpdateItem",
            json!({
                "Key": { "pk": s(user_pk(openid)) },
                "UpdateExpression": "REMOVE first_seen",
                "ConditionExpression": "first_seen = :at",
                "ExpressionAttributeValues": { ":at": n(at) },
            }),
        )
        .await
        .map(drop)
    }

    async fn get_user(&self, openid: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self
            .get(user_pk(openid))
            .await?
            .map(|item| user_record(openid, &item)))
    }

    async fn bind_phone(&self, openid: &str, phone: &str, now: u64) -> Result<(), StoreError> {
        self.call(
            "UpdateItem",
            json!({
                "Key": { "pk": s(user_pk(openid)) },
                "UpdateExpression": "SET phone = :p, phone_bound_at = :now",
                "ExpressionAttributeValues": { ":p": s(phone), ":now": n(now) },
            }),
        )
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn update_profile(
        &self,
        openid: &str,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<UserRecord, StoreError> {
        let mut sets = Vec::new();
        let mut values = Map::new();
        if let Some(v) = nickname {
            sets.push("nickname = :n");
            values.insert(":n".into(), s(v));
        }
        if let Some(v) = avatar_url {
            sets.push("avatar_url = :a");
            values.insert(":a".into(), s(v));
        }
        if sets.is_empty() {
            return Ok(self.get_user(openid).await?.unwrap_or(UserRecord {
                openid: openid.to_string(),
                ..Default::default()
            }));
        }
        let out = self
            .call(
                "UpdateItem",
                json!({
                    "Key": { "pk": s(user_pk(openid)) },
                    "UpdateExpression": format!("SET {}", sets.join(", ")),
                    "ExpressionAttributeValues": values,
                    "ReturnValues": "ALL_NEW",
                }),
            )
            .await
            .map_err(err)?;
        let item = out
            .get("Attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(user_record(openid, &item))
    }
}

fn user_record(openid: &str, item: &Map<String, Value>) -> UserRecord {
    UserRecord {
        openid: openid.to_string(),
        unionid: get_s(item, "unionid"),
        first_seen: get_n(item, "first_seen"),
        last_login: get_n(item, "last_login"),
        phone: get_s(item, "phone"),
        phone_bound_at: get_n(item, "phone_bound_at"),
        nickname: get_s(item, "nickname"),
        avatar_url: get_s(item, "avatar_url"),
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
        self.conditional(
            "PutItem",
            json!({
                "Item": {
                    "pk": s(token_pk(key)),
                    "access_token": s(t.token.expose()),
                    "expires_at": n(t.expires_at),
                    "fetched_at_ms": n(t.fetched_at_ms),
                },
                // An item without fetched_at_ms (written by an older version) is always replaced.
                "ConditionExpression": "attribute_not_exists(pk) OR attribute_not_exists(fetched_at_ms) OR fetched_at_ms <= :f",
                "ExpressionAttributeValues": { ":f": n(t.fetched_at_ms) },
            }),
        )
        .await
        .map(|_| ())
    }

    async fn delete_token_if(&self, key: &str, token: &Secret) -> Result<bool, StoreError> {
        // Marked expired rather than deleted: readers treat both alike, the next fetch overwrites
        // it, and concurrent reads never meet a half-deleted item (moto's server has that race).
        self.conditional(
            "UpdateItem",
            json!({
                "Key": { "pk": s(token_pk(key)) },
                "UpdateExpression": "SET expires_at = :now",
                "ConditionExpression": "access_token = :t",
                "ExpressionAttributeValues": {
                    ":t": s(token.expose()),
                    ":now": n(crate::now_secs()),
                },
            }),
        )
        .await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let until = now_ms + ttl_ms;
        let mine = |item: &Map<String, Value>| {
            get_s(item, "holder").as_deref() == Some(holder)
                && get_n(item, "until_ms") == Some(until)
        };
        self.conditional_or_ours(
            "PutItem",
            json!({
                "Item": {
                    "pk": s(lease_pk(name)),
                    "holder": s(holder),
                    "until_ms": n(until),
                    "expires_at": n(until / 1000 + 1),
                },
                "ConditionExpression": "attribute_not_exists(pk) OR until_ms <= :now",
                "ExpressionAttributeValues": { ":now": n(now_ms) },
            }),
            mine,
        )
        .await
    }

    async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let until = now_ms + ttl_ms;
        let mine = |item: &Map<String, Value>| {
            get_s(item, "holder").as_deref() == Some(holder)
                && get_n(item, "until_ms") == Some(until)
        };
        self.conditional_or_ours(
            "UpdateItem",
            json!({
                "Key": { "pk": s(lease_pk(name)) },
                "UpdateExpression": "SET until_ms = :until, expires_at = :exp",
                // Only a lease still held: a renewal that lands after the release must not revive it.
                "ConditionExpression": "holder = :h AND until_ms > :now",
                "ExpressionAttributeValues": {
                    ":h": s(holder),
                    ":now": n(now_ms),
                    ":until": n(until),
                    ":exp": n(until / 1000 + 1),
                },
            }),
            mine,
        )
        .await
    }

    async fn take_quota(
        &self,
        name: &str,
        limit: u32,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        // A retry after an applied attempt counts one use twice: the quota is then reached a
        // little early, never passed.
        self.conditional(
            "UpdateItem",
            json!({
                "Key": { "pk": s(quota_pk(name)) },
                "UpdateExpression": "ADD used :one SET expires_at = :exp",
                "ConditionExpression": "attribute_not_exists(used) OR used < :limit",
                "ExpressionAttributeValues": {
                    ":one": n(1),
                    ":limit": n(u64::from(limit)),
                    ":exp": n(expires_at),
                },
            }),
        )
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        // Released by ending it now (not by deleting the item), for the same reason as above.
        self.conditional(
            "UpdateItem",
            json!({
                "Key": { "pk": s(lease_pk(name)) },
                "UpdateExpression": "SET until_ms = :zero",
                "ConditionExpression": "holder = :h",
                "ExpressionAttributeValues": { ":h": s(holder), ":zero": n(0) },
            }),
        )
        .await
        .map(|_| ())
    }
}

// The grant ledger: one item per user (`grants#<openid>`), an attribute per template and kind
// (`o:<template id>`, the one-time count; `l:<template id>`, the standing grant), so a push's
// changes are one update, a send's "use one grant" one conditional update and
// `GET /subscriptions` one read.

#[async_trait]
impl MessageStore for DynamoStore {
    async fn claim(
        &self,
        key: &str,
        holder: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let request = json!({
            "Item": {
                "pk": s(claim_pk(key)),
                "holder": s(holder),
                "expires_at": n(expires_at),
            },
            "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now OR holder = :h",
            "ExpressionAttributeValues": { ":now": n(now), ":h": s(holder) },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        });
        match self.call("PutItem", request).await {
            Ok(_) => Ok(Claim::Taken),
            Err(e) if e.code == "ConditionalCheckFailedException" => {
                let old = e.old_item.unwrap_or_default();
                // A retry after an applied attempt meets its own claim.
                if get_s(&old, "holder").as_deref() == Some(holder) {
                    return Ok(Claim::Taken);
                }
                Ok(Claim::Held {
                    until: get_n(&old, "expires_at").unwrap_or(u64::MAX),
                })
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn release_claim(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.conditional(
            "DeleteItem",
            json!({
                "Key": { "pk": s(claim_pk(key)) },
                "ConditionExpression": "holder = :h",
                "ExpressionAttributeValues": { ":h": s(holder) },
            }),
        )
        .await
        .map(|_| ())
    }

    async fn change_grants(
        &self,
        openid: &str,
        changes: &[(String, NetChange)],
    ) -> Result<(), StoreError> {
        let (mut set, mut add, mut remove) = (Vec::new(), Vec::new(), Vec::new());
        let mut names = Map::new();
        let mut values = Map::new();
        for (i, (template_id, c)) in changes.iter().enumerate() {
            let (o, l) = (format!("#o{i}"), format!("#l{i}"));
            let mut used = (false, false);
            match (c.clear, c.add) {
                (true, 0) => remove.push(o.clone()),
                (true, k) => {
                    set.push(format!("{o} = :a{i}"));
                    values.insert(format!(":a{i}"), n(u64::from(k)));
                }
                (false, 0) => {}
                (false, k) => {
                    add.push(format!("{o} :a{i}"));
                    values.insert(format!(":a{i}"), n(u64::from(k)));
                }
            }
            if c.clear || c.add > 0 {
                used.0 = true;
            }
            match c.long_term {
                Some(true) => {
                    set.push(format!("{l} = :t"));
                    values.insert(":t".into(), json!({ "BOOL": true }));
                    used.1 = true;
                }
                Some(false) => {
                    remove.push(l.clone());
                    used.1 = true;
                }
                None => {}
            }
            if used.0 {
                names.insert(o, json!(format!("o:{template_id}")));
            }
            if used.1 {
                names.insert(l, json!(format!("l:{template_id}")));
            }
        }
        let mut clauses = Vec::new();
        for (word, parts) in [("SET", &set), ("ADD", &add), ("REMOVE", &remove)] {
            if !parts.is_empty() {
                clauses.push(format!("{word} {}", parts.join(", ")));
            }
        }
        if clauses.is_empty() {
            return Ok(());
        }
        let mut request = json!({
            "Key": { "pk": s(grants_pk(openid)) },
            "UpdateExpression": clauses.join(" "),
            "ExpressionAttributeNames": names,
        });
        if !values.is_empty() {
            request["ExpressionAttributeValues"] = Value::Object(values);
        }
        self.call("UpdateItem", request).await.map_err(err)?;
        Ok(())
    }

    async fn take_grant(
        &self,
        openid: &str,
        template_id: &str,
    ) -> Result<Option<Taken>, StoreError> {
        let Some(item) = self.get(grants_pk(openid)).await? else {
            return Ok(None);
        };
        if item
            .get(&format!("l:{template_id}"))
            .and_then(|v| v.get("BOOL"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Ok(Some(Taken::LongTerm));
        }
        if get_n(&item, &format!("o:{template_id}")).unwrap_or(0) == 0 {
            return Ok(None);
        }
        // Never below zero, whoever else is sending. (A retry after an applied attempt uses
        // two grants: the ledger then errs towards not sending.)
        let names = json!({ "#o": format!("o:{template_id}") });
        let taken = self
            .conditional(
                "UpdateItem",
                json!({
                    "Key": { "pk": s(grants_pk(openid)) },
                    "UpdateExpression": "SET #o = #o - :one",
                    "ConditionExpression": "#o >= :one",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": { ":one": n(1) },
                }),
            )
            .await?;
        Ok(taken.then_some(Taken::OneTime))
    }

    async fn merge_record(
        &self,
        key: &str,
        fields: &Map<String, Value>,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut sets = vec!["expires_at = :exp".to_string()];
        let mut names = Map::new();
        let mut values = Map::new();
        values.insert(":exp".into(), n(expires_at));
        for (i, (k, v)) in fields.iter().enumerate() {
            let value = match v {
                Value::String(t) => s(t.clone()),
                Value::Number(num) => json!({ "N": num.to_string() }),
                Value::Bool(b) => json!({ "BOOL": b }),
                // Scalars only (the embedded store keeps the same).
                _ => continue,
            };
            sets.push(format!("#f{i} = :f{i}"));
            names.insert(format!("#f{i}"), json!(format!("f:{k}")));
            values.insert(format!(":f{i}"), value);
        }
        let mut request = json!({
            "Key": { "pk": s(record_pk(key)) },
            "UpdateExpression": format!("SET {}", sets.join(", ")),
            "ExpressionAttributeValues": values,
        });
        if !names.is_empty() {
            request["ExpressionAttributeNames"] = Value::Object(names);
        }
        self.call("UpdateItem", request).await.map_err(err)?;
        Ok(())
    }

    async fn get_record(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        let Some(item) = self.get(record_pk(key)).await? else {
            return Ok(None);
        };
        if get_n(&item, "expires_at").is_none_or(|e| e <= now) {
            return Ok(None);
        }
        let mut fields = Map::new();
        for (name, v) in &item {
            let Some(field) = name.strip_prefix("f:") else {
                continue;
            };
            let value = if let Some(t) = v.get("S").and_then(Value::as_str) {
                json!(t)
            } else if let Some(num) = v.get("N").and_then(Value::as_str) {
                serde_json::from_str(num).unwrap_or(Value::Null)
            } else if let Some(b) = v.get("BOOL").and_then(Value::as_bool) {
                json!(b)
            } else {
                continue;
            };
            fields.insert(field.to_string(), value);
        }
        Ok(Some(fields))
    }

    async fn grants(&self, openid: &str) -> Result<Vec<Grant>, StoreError> {
        let Some(item) = self.get(grants_pk(openid)).await? else {
            return Ok(Vec::new());
        };
        let mut by_template: std::collections::BTreeMap<String, Grant> = Default::default();
        for (name, value) in &item {
            let (kind, template_id) = match name.split_once(':') {
                Some((k @ ("o" | "l"), t)) => (k, t),
                _ => continue,
            };
            let g = by_template
                .entry(template_id.to_string())
                .or_insert_with(|| Grant {
                    template_id: template_id.to_string(),
                    one_time: 0,
                    long_term: false,
                });
            if kind == "o" {
                g.one_time = value
                    .get("N")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            } else {
                g.long_term = value.get("BOOL").and_then(Value::as_bool) == Some(true);
            }
        }
        Ok(by_template
            .into_values()
            .filter(|g| g.one_time > 0 || g.long_term)
            .collect())
    }
}

/// Creates the table if it is missing, with the key schema and TTL setting of template.yaml.
/// For the local server and the tests; in AWS the template creates it.
pub async fn ensure_table(client: &DynamoDb, table: &str) -> Result<(), StoreError> {
    let name = json!({ "TableName": table });
    let status = |d: &Value| {
        d.pointer("/Table/TableStatus")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Ok(d) = client.call("DescribeTable", &name).await
        && status(&d).as_deref() == Some("ACTIVE")
    {
        return Ok(());
    }
    let created = client
        .call(
            "CreateTable",
            &json!({
                "TableName": table,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{ "AttributeName": "pk", "AttributeType": "S" }],
                "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }],
            }),
        )
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.code == "ResourceInUseException" => {}
        Err(e) => return Err(err(e)),
    }
    for _ in 0..60 {
        let d = client.call("DescribeTable", &name).await.map_err(err)?;
        if status(&d).as_deref() == Some("ACTIVE") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let ttl = client
        .call(
            "UpdateTimeToLive",
            &json!({
                "TableName": table,
                "TimeToLiveSpecification": { "AttributeName": "expires_at", "Enabled": true },
            }),
        )
        .await;
    match ttl {
        // Another process created the table and enabled TTL first.
        Err(e) if !e.message.contains("already enabled") => Err(err(e)),
        _ => Ok(()),
    }
}
