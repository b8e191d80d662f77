//! The grant ledger: per (openid, template id), the one-time grants a user gave and whether a
//! standing grant exists, kept from WeChat's subscribe pushes.
//!
//! - `subscribe_msg_popup_event`: `accept` adds one one-time grant; `reject` and `ban` clear them.
//! - `subscribe_msg_change_event` (the user changed the setting): `accept` records a standing
//!   grant; `reject` and `ban` withdraw it and clear the one-time grants.
//! - `subscribe_msg_sent_event`: an item with `ErrorCode` 43101 (the user has no grant left)
//!   clears the template's grants, the standing one too; a delivered message changes nothing (its
//!   send used its grant).
//!
//! `List` may hold one item or several (the receiver always makes it an array; an object is
//! read too).

use serde_json::Value;

use crate::store::{GrantChange, MessageStore, NetChange, StoreError};

pub const EVENTS: &[&str] = &[
    "subscribe_msg_popup_event",
    "subscribe_msg_change_event",
    "subscribe_msg_sent_event",
];

/// The ledger change one item of `event` asks for.
pub fn change_of(event: &str, item: &Value) -> Option<GrantChange> {
    let status = item.get("SubscribeStatusString").and_then(Value::as_str);
    match (event, status) {
        ("subscribe_msg_popup_event", Some("accept")) => Some(GrantChange::AddOneTime),
        ("subscribe_msg_popup_event", Some("reject" | "ban")) => Some(GrantChange::ClearOneTime),
        ("subscribe_msg_change_event", Some("accept")) => Some(GrantChange::LongTerm(true)),
        ("subscribe_msg_change_event", Some("reject" | "ban")) => {
            Some(GrantChange::LongTerm(false))
        }
        ("subscribe_msg_sent_event", _) => {
            let code = item.get("ErrorCode").and_then(|c| {
                c.as_i64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            });
            // The user holds nothing for this template any more, standing grant included.
            (code == Some(43101)).then_some(GrantChange::LongTerm(false))
        }
        _ => None,
    }
}

/// Applies a subscribe push (`detail` as the receiver published it), all its items in one
/// write; the number of item changes.
pub async fn apply(store: &dyn MessageStore, detail: &Value) -> Result<usize, StoreError> {
    let Some(openid) = detail
        .get("FromUserName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        tracing::warn!("a subscribe push without FromUserName: nothing to record");
        return Ok(0);
    };
    let event = detail.get("Event").and_then(Value::as_str).unwrap_or("");
    let items: Vec<&Value> = match detail.get("List") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => Vec::new(),
    };
    // Each template's changes in order, folded into one.
    let mut by_template: Vec<(String, Vec<GrantChange>)> = Vec::new();
    for item in items {
        let Some(template_id) = item
            .get("TemplateId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 128)
        else {
            continue;
        };
        let Some(change) = change_of(event, item) else {
            continue;
        };
        match by_template.iter_mut().find(|(t, _)| t == template_id) {
            Some((_, changes)) => changes.push(change),
            None => by_template.push((template_id.to_string(), vec![change])),
        }
    }
    let changed = by_template.iter().map(|(_, c)| c.len()).sum();
    let net: Vec<(String, NetChange)> = by_template
        .into_iter()
        .map(|(t, c)| (t, NetChange::of(c)))
        .collect();
    if !net.is_empty() {
        store.change_grants(openid, &net).await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pushs_changes_fold_per_template_in_order() {
        use GrantChange::*;
        let n = NetChange::of;
        assert_eq!(
            n([AddOneTime, AddOneTime]),
            NetChange {
                clear: false,
                add: 2,
                long_term: None
            }
        );
        assert_eq!(
            n([AddOneTime, ClearOneTime]),
            NetChange {
                clear: true,
                add: 0,
                long_term: None
            }
        );
        assert_eq!(
            n([ClearOneTime, AddOneTime]),
            NetChange {
                clear: true,
                add: 1,
                long_term: None
            }
        );
        assert_eq!(
            n([LongTerm(true), LongTerm(false)]),
            NetChange {
                clear: true,
                add: 0,
                long_term: Some(false)
            }
        );
        assert_eq!(
            n([LongTerm(false), LongTerm(true)]),
            NetChange {
                clear: true,
                add: 0,
                long_term: Some(true)
            }
        );
    }

    #[test]
    fn each_answer_changes_the_ledger_as_documented() {
        let item = |status: &str| json!({"TemplateId": "T", "SubscribeStatusString": status});
        let popup = "subscribe_msg_popup_event";
        let change = "subscribe_msg_change_event";
        let sent = "subscribe_msg_sent_event";
        assert_eq!(
            change_of(popup, &item("accept")),
            Some(GrantChange::AddOneTime)
        );
        assert_eq!(
            change_of(popup, &item("reject")),
            Some(GrantChange::ClearOneTime)
        );
        assert_eq!(
            change_of(popup, &item("ban")),
            Some(GrantChange::ClearOneTime)
        );
        assert_eq!(
            change_of(change, &item("accept")),
            Some(GrantChange::LongTerm(true))
        );
        assert_eq!(
            change_of(change, &item("reject")),
            Some(GrantChange::LongTerm(false))
        );
        assert_eq!(change_of(popup, &item("maybe")), None);
        assert_eq!(change_of("other_event", &item("accept")), None);
        let delivered =
            json!({"TemplateId": "T", "MsgID": 1, "ErrorCode": 0, "ErrorStatus": "success"});
        assert_eq!(change_of(sent, &delivered), None);
        for refused in [
            json!({"TemplateId": "T", "ErrorCode": 43101}),
            json!({"TemplateId": "T", "ErrorCode": "43101"}),
        ] {
            assert_eq!(
                change_of(sent, &refused),
                Some(GrantChange::LongTerm(false))
            );
        }
    }
}
